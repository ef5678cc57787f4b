"""Storage: the schema, units of work, the ledger, the registry, the audit trail, the
inbox and the migrations. SQLAlchemy lives here; GitHub and the web never do."""
