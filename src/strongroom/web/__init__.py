"""The web service: REST API, admin UI and scheduler in one process (``strongroom serve``)."""
