// The epc schema and its versions. Each release of the importer knows the schema version it
// writes; the first run of a newer binary upgrades an older database in place, one migration at a
// time, in order, under a lock; a database newer than the binary is refused (exit 2) before
// anything is written to it.
#pragma once

#include "epc/db/connection.hpp"

namespace epc::db {

// The version this binary creates and expects.
int current_schema_version();

// The version recorded in the database: 0 when there is no epc schema yet. Databases of the
// releases before versioning (0.1.x) have the bookkeeping tables but no version table: 1.
int database_schema_version(Connection& db);

// Creates or upgrades the schema to current_schema_version(); safe when several importers start
// together. Throws Error(exit_usage) when the database is newer than this binary.
void migrate_schema(Connection& db);

}  // namespace epc::db
