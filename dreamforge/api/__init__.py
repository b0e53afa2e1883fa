"""The HTTP API: ``app.create_app`` builds it, ``deps`` holds what routes inject (the caller's
project, the database, the settings), ``routes/`` has one module per resource."""
