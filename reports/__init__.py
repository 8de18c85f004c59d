"""Report templates (data): jinja2 files read by maillens.render."""
