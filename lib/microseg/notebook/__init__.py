"""The notebook layer: what the numbered notebooks call around the recipes.

- :mod:`~microseg.notebook.session` — ``start_notebook`` / ``finish_notebook``: parameters
  checked, typed and recorded, the environment saved, the summary written (re-exported here:
  ``from microseg.notebook import start_notebook``);
- :mod:`~microseg.notebook.parameters` — the names each notebook declares, and the error for a
  name it does not;
- :mod:`~microseg.notebook.forms` — the parameter form (ipywidgets) of every notebook;
- :mod:`~microseg.notebook.chain` — notebooks run headless one after another (papermill) into one
  run folder; :mod:`~microseg.notebook.demo` — the whole chain on synthetic data (``make demo``);
- :mod:`~microseg.notebook.colab` — setting up Google Colab.

This layer sits on top: it may import every other part of microseg, and nothing imports it
(``docs/architecture.md``).
"""

from microseg.notebook.session import *  # noqa: F403 (the notebooks' own import path)
from microseg.notebook.session import __all__  # noqa: F401
