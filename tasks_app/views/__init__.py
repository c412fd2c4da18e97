"""The web UI (HTMX pages): one module per page; HTMX requests get partials of the same templates."""
