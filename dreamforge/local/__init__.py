"""The local stack on one machine: ``embedded_db`` (SecantusDB) and ``stack`` (database, API,
workers and dashboard as child processes), as ``dreamforge up`` and the tests start them."""
