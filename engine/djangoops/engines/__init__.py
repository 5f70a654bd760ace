"""One module per database engine, each a subclass of base.Engine: what differs
between PostgreSQL and MySQL/MariaDB, and nothing else."""
