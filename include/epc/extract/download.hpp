// Downloading a release from the publisher (docs/data-formats.md §1): the current service (Bearer token,
// 302 to a presigned S3 URL) or the legacy one (HTTP Basic, usually 302 to a signed URL).
//
// The archive streams to <work_dir>/<type>-<source>.zip.part while its SHA-256 is computed, and is
// renamed to <type>-<source>.zip only once its size matches what the service advertised. Cut
// transfers resume with a Range request on a freshly requested URL (a presigned URL is single-use
// in practice and expires after ~30 s). Secrets (token, API key, a presigned URL's query string)
// never appear in log lines or error messages. The files this leaves in the work directory are
// described in download_files.hpp; the HTTP plumbing is common/http.hpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "epc/common/types.hpp"
#include "epc/extract/credentials.hpp"

namespace epc {

enum class Source { current, legacy };

std::string_view source_name(Source source);
std::optional<Source> parse_source(std::string_view name);
// The publisher's real base URL for a source (no trailing slash).
std::string_view default_base_url(Source source);

struct ReleaseInfo {
    std::uint64_t size = 0;    // bytes of the zip the service advertises
    std::string last_updated;  // current service: lastUpdated (ISO-8601); legacy: empty
    std::string file_name;     // the publisher's name: domestic-csv.zip, all-domestic-certificates.zip
};

struct DownloadOptions {
    Source source = Source::current;
    CertType type = CertType::domestic;
    std::string base_url;               // empty = default_base_url(source)
    std::string work_dir = "epc-work";  // created when missing
    Credentials creds;
    int max_attempts = 6;              // consecutive attempts without progress before giving up
    double initial_backoff_s = 2.0;    // first backoff bound; doubles per failed attempt
    double max_backoff_s = 120.0;      // backoff bound (full jitter: sleep uniform(0, bound))
    double max_retry_after_s = 600.0;  // a longer Retry-After is clamped to this
    long connect_timeout_s = 30;
    // A transfer slower than low_speed_bytes/s for low_speed_time_s counts as a timeout (retried).
    // S3 serves tens of MB/s; a stalled connection otherwise hangs until the job's own timeout.
    long low_speed_bytes = 1024;
    long low_speed_time_s = 60;
    double progress_interval_s = 10.0;  // at most one progress log line per interval
    bool progress_bar = false;          // a terminal: redraw one bar line instead of logging
};

struct DownloadResult {
    std::string path;  // <work_dir>/<type>-<source>.zip
    std::uint64_t bytes = 0;
    std::string sha256;  // hex; also written to <path>.sha256 (sha256sum format)
    ReleaseInfo info;
    int attempts = 0;      // download URL requests made (1 = clean first try)
    bool resumed = false;  // some bytes came from a Range request
};

// <work_dir>/<type>-<source>.zip
std::string download_path(const DownloadOptions& options);

// Asks the service what it currently publishes (for check-release and for the size check).
// Retries like download_release. Throws Error: exit_credentials (401/403), exit_usage (missing
// credentials; 404 = no such file: wrong --certtype/--source/--base-url), exit_transient (network
// or 5xx/429 after retries), exit_internal (any other answer).
ReleaseInfo fetch_release_info(const DownloadOptions& options);

// Downloads the release's zip (resuming a .part file of the same release left by an earlier
// run) and returns where it is. Throws Error as fetch_release_info does; a size that still does
// not match after the retries is exit_transient.
DownloadResult download_release(const DownloadOptions& options);

namespace detail {
// The legacy listing of GET /api/v1/files: a JSON map of file name to size. Its exact shape is
// unconfirmed, so this accepts the map at the top level or under one key ("files", "data", …),
// with sizes as numbers, numeric strings or objects holding "size"/"fileSize".
std::optional<std::uint64_t> legacy_listed_size(const nlohmann::json& listing, const std::string& name);
}  // namespace detail

}  // namespace epc
