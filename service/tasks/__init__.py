"""Mass operations run in the background (DESIGN §2, "Mass operations: tasks (code 100)").

`model` (kinds, states, what a request asks for: pure), `formats` (an export's CSV and NDJSON: pure), one
module per kind (`export`, `close`, `replay`: one bounded batch at a time, SQL in `service/store/`),
`runner` (the `TaskRunner` every serving process runs) and `client` (the CLI's commands over HTTP).
"""
