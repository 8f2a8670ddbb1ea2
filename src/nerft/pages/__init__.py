"""Pages people look at: a text with its entities marked (``marks``, pure), and self-contained HTML files built
from the package's assets (``bundle``): the page ``nerft serve`` answers at ``/`` (``serve_page``), the error report
``nerft evaluate`` writes (``report``) and the corpus sample of ``nerft predict --output-format html``
(``corpus``). Nothing here loads from the internet; every text is shown as text."""
