"""``report.html``: the page (page.py), the inputs it shows (select.py) and their previews (previews.py)."""
