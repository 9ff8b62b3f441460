// Splitting one archive's files between the processes of a sharded load (AWS Batch array jobs).
#pragma once

#include <vector>

#include "epc/extract/archive.hpp"

namespace epc {

// Which shard loads each file (result[i] for files[i]): largest files first, each to the shard with
// the fewest bytes so far, so shards finish together. Depends only on the archive, so every shard
// process computes the same split, and the shards together cover every file exactly once.
std::vector<int> assign_shards(const std::vector<CertFile>& files, int count);

}  // namespace epc
