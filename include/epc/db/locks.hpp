// Advisory lock keys, written once: one namespace for epc-import, one object per certificate
// type. A run holds its type's lock exclusively; the shards of a split load hold it shared (so they
// run together but never beside an ordinary run) plus an exclusive lock of their own shard in a
// second namespace. Transaction-level locks (schema changes, load decisions) sit above the types.
#pragma once

#include "epc/common/types.hpp"

namespace epc::db {

constexpr int kLockNamespace = 0x45504331;       // "EPC1"
constexpr int kShardLockNamespace = 0x45504332;  // "EPC2"
inline int lock_object(CertType type) { return static_cast<int>(type) + 1; }
constexpr int kShardsPerType = 100000;  // shard lock objects of a type: lock_object(type) * this + index
inline int shard_lock_object(CertType type, int index) { return lock_object(type) * kShardsPerType + index; }
constexpr int kSchemaLock = 100;  // creating or upgrading the schema
inline int load_decision_lock(CertType type) { return 200 + lock_object(type); }
// Writing epc.geocode_cache, which all types share: the offline files' bulk insert holds it
// exclusively (it inserts without ON CONFLICT), every other writer shared.
constexpr int kGeocodeCacheLock = 300;

}  // namespace epc::db
