"""The console: server-rendered pages for people (support engineers) over the same store, scopes and replay
as the API. `routes.Console` holds the pages, `session` the sign-in cookie and its CSRF tokens, `chart` the
delivery-time histogram, `templates/` and `static/` what a browser is sent (nothing fetched from elsewhere)."""
