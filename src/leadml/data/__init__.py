"""The rows and their rules: schema, contracts, ingestion, joins, features, the synthetic CRM (pure)."""
