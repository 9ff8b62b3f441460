#include "epc/geocode/geocode.hpp"

#include <strings.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "epc/db/copy.hpp"
#include "epc/db/transaction.hpp"
#include "epc/transform/csv.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

namespace {

const char* const kHttpProviders[] = {"postcodes-io", "google", "nominatim", "os-places"};

// Queries read from the database per round of the chain: enough to keep HTTP providers busy,
// few enough that memory stays small whatever the number of addresses.
constexpr int kChunk = 5000;

class FileSource : public io::ByteSourceBase {
public:
    explicit FileSource(const std::string& path) : file_(std::fopen(path.c_str(), "rb")) {
        if (!file_) throw Error(exit_usage, "cannot open geocoder file " + path);
    }
    ~FileSource() override { std::fclose(file_); }
    FileSource(const FileSource&) = delete;
    FileSource& operator=(const FileSource&) = delete;
    int read(char* buffer, int size) override { return static_cast<int>(std::fread(buffer, 1, size, file_)); }

private:
    std::FILE* file_;
};

int find(const std::vector<Field>& header, std::initializer_list<const char*> names) {
    for (const char* name : names)
        for (std::size_t i = 0; i < header.size(); ++i) {
            std::string h(trim(header[i]));
            if (h.size() == std::strlen(name) && strncasecmp(h.c_str(), name, h.size()) == 0)
                return static_cast<int>(i);
        }
    return -1;
}

struct Reference {
    const char* table;     // epc.ref_<name>
    const char* key_type;  // SQL type of the key column
    Precision precision;
};

Reference reference_for(const std::string& provider) {
    if (provider == "uprn") return {"epc.ref_uprn", "bigint", Precision::property};
    return {"epc.ref_postcode", "text", Precision::postcode};
}

// name:size:mtime of a reference file: a changed file is loaded again, the same one never twice.
std::string reference_identity(const std::string& file) {
    struct stat st {};
    if (stat(file.c_str(), &st) != 0) throw Error(exit_usage, "geocoder file " + file + " does not exist");
    return std::filesystem::path(file).filename().string() + ":" + std::to_string(st.st_size) + ":" +
           std::to_string(st.st_mtime);
}

bool reference_is_loaded(db::Connection& db, const ChainLink& link, const std::string& identity) {
    db::Result known = db.exec("SELECT file_identity FROM epc.reference_file WHERE provider = $1", {link.provider});
    return known.rows() == 1 && known.text(0, 0) == identity &&
           db.exec("SELECT to_regclass($1) IS NOT NULL", {reference_for(link.provider).table}).boolean(0, 0);
}

// Where the key and the coordinates are in a reference file's header.
struct ReferenceColumns {
    int key, lat, lon;
    int width() const { return std::max({key, lat, lon}) + 1; }
};

ReferenceColumns reference_columns(const std::vector<Field>& header, const ChainLink& link) {
    const bool uprn = link.provider == "uprn";
    const ReferenceColumns c{uprn ? find(header, {"UPRN"}) : find(header, {"pcds", "pcd2", "pcd"}),
                             find(header, {"LATITUDE", "lat"}), find(header, {"LONGITUDE", "long", "lon"})};
    if (c.key < 0 || c.lat < 0 || c.lon < 0)
        throw Error(exit_usage, "geocoder file " + link.file + ": header lacks " +
                                    (uprn ? "UPRN, LATITUDE, LONGITUDE" : "pcds, lat, long") + " columns");
    return c;
}

struct ReferenceCounts {
    std::uint64_t rows = 0, skipped = 0;
};

// Streams the located rows of the file into COPY; rows without a usable location are skipped.
ReferenceCounts copy_reference_rows(CsvReader& reader, const ReferenceColumns& c, bool uprn, db::CopyIn& copy) {
    ReferenceCounts counts;
    std::string buf;
    Record record;
    while (reader.next(record)) {
        if (static_cast<int>(record.fields.size()) < c.width()) {
            ++counts.skipped;
            continue;
        }
        std::string_view k = trim(record.fields[c.key]), la = trim(record.fields[c.lat]),
                         lo = trim(record.fields[c.lon]);
        // ONSPD writes 99.999999 for postcodes without a location.
        if (!is_decimal(la) || !is_decimal(lo) || la == "99.999999" || (uprn && !is_uprn(k)) || k.empty()) {
            ++counts.skipped;
            continue;
        }
        if (uprn) buf.append(k);
        else append_copy_text(buf, canonical_postcode(k));
        buf.append("\t").append(la).append("\t").append(lo).append("\n");
        ++counts.rows;
        if (buf.size() > (1 << 20)) {
            copy.put(buf);
            buf.clear();
        }
    }
    copy.put(buf);
    return counts;
}

// Loads an offline reference file (OS Open UPRN: UPRN, LATITUDE, LONGITUDE; ONSPD: pcds, lat, long)
// into its table with COPY, unless this very file was loaded before.
void load_reference(db::Connection& db, const ChainLink& link) {
    const std::string identity = reference_identity(link.file);
    if (reference_is_loaded(db, link, identity)) {
        spdlog::info("geocode: {} reference already loaded from {}", link.provider, link.file);
        return;
    }
    spdlog::info("geocode: loading {} reference from {}", link.provider, link.file);
    const auto started = std::chrono::steady_clock::now();
    CsvReader reader(link.file, std::make_unique<FileSource>(link.file));
    Record header;
    if (!reader.next(header)) throw Error(exit_usage, "geocoder file " + link.file + " is empty");
    const ReferenceColumns columns = reference_columns(header.fields, link);
    const Reference ref = reference_for(link.provider);
    const std::string table(ref.table);

    db::Transaction tx(db);
    db.exec("DROP TABLE IF EXISTS " + table);
    db.exec("CREATE TABLE " + table + " (key " + ref.key_type +
            " NOT NULL, latitude double precision NOT NULL, longitude double precision NOT NULL)");
    db::CopyIn copy(db, table, "key, latitude, longitude", db::CopyFormat::text);
    const ReferenceCounts counts = copy_reference_rows(reader, columns, link.provider == "uprn", copy);
    copy.finish();
    // Terminated and live postcodes can share a display form; keep one row per key.
    db.exec("DELETE FROM " + table + " a USING " + table + " b WHERE a.key = b.key AND a.ctid > b.ctid");
    db.exec("ALTER TABLE " + table + " ADD PRIMARY KEY (key)");
    db.exec("INSERT INTO epc.reference_file (provider, file_identity, rows, loaded_at) VALUES ($1, $2, $3, now()) "
            "ON CONFLICT (provider) DO UPDATE SET file_identity = EXCLUDED.file_identity, rows = EXCLUDED.rows, "
            "loaded_at = now()",
            {link.provider, identity, counts.rows});
    tx.commit();
    db.exec("ANALYZE " + table);
    spdlog::info("geocode: {} rows of {} loaded ({} without a location skipped) in {:.1f} s", counts.rows,
                 link.provider, counts.skipped,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

struct Final {
    std::size_t index;
    GeocodeResult result;
    std::string provider;
};

// Writes final answers to the permanent cache in batches, each in its own transaction, so a crash
// loses at most one batch and a re-run asks only for what is not cached.
class CacheWriter {
public:
    CacheWriter(db::Connection& db, std::size_t batch) : db_(db), batch_(batch) {
        db_.exec("CREATE TEMP TABLE epc_geocode_batch (address_key text, status text, latitude double precision, "
                 "longitude double precision, provider text, precision text) ON COMMIT DELETE ROWS");
    }
    void add(const std::string& key, const GeocodeResult& r, const std::string& provider) {
        append_copy_text(buf_, key);
        if (r.status == GeocodeResult::Status::found) {
            char coords[80];
            std::snprintf(coords, sizeof coords, "\tfound\t%.7f\t%.7f\t", r.latitude, r.longitude);
            buf_ += coords;
            append_copy_text(buf_, provider);
            buf_ += '\t';
            buf_ += precision_name(r.precision);
        } else {
            buf_ += "\tnot_found\t\\N\t\\N\t";
            append_copy_text(buf_, provider);
            buf_ += "\t\\N";
        }
        buf_ += '\n';
        if (++pending_ >= batch_) flush();
    }
    void flush() {
        if (pending_ == 0) return;
        db::Transaction tx(db_);
        db::CopyIn copy(db_, "epc_geocode_batch", "address_key, status, latitude, longitude, provider, precision",
                        db::CopyFormat::text);
        copy.put(buf_);
        copy.finish();
        db_.exec("INSERT INTO epc.geocode_cache (address_key, status, latitude, longitude, provider, precision, "
                 "checked_at) SELECT DISTINCT ON (address_key) address_key, status, latitude, longitude, provider, "
                 "precision, now() FROM epc_geocode_batch "
                 "ON CONFLICT (address_key) DO UPDATE SET status = EXCLUDED.status, latitude = EXCLUDED.latitude, "
                 "longitude = EXCLUDED.longitude, provider = EXCLUDED.provider, precision = EXCLUDED.precision, "
                 "checked_at = EXCLUDED.checked_at");
        tx.commit();
        buf_.clear();
        pending_ = 0;
    }

private:
    db::Connection& db_;
    std::size_t batch_;
    std::string buf_;
    std::size_t pending_ = 0;
};

// Looks queries up in an offline reference table; returns index -> coordinates for those found.
std::map<std::size_t, std::pair<double, double>> lookup_reference(db::Connection& db, const std::string& provider,
                                                                  const std::vector<GeocodeQuery>& queries,
                                                                  const std::vector<std::size_t>& indexes) {
    const Reference ref = reference_for(provider);
    std::string keys = "{", idx = "{";
    bool any = false;
    for (std::size_t i : indexes) {
        const GeocodeQuery& q = queries[i];
        std::string k;
        if (provider == "uprn") {
            if (!q.uprn) continue;
            k = std::to_string(*q.uprn);
        } else {
            if (q.postcode.empty()) continue;
            k = "\"" + q.postcode + "\"";  // canonical postcodes hold only letters, digits and a space
        }
        if (any) keys += ',', idx += ',';
        keys += k;
        idx += std::to_string(i);
        any = true;
    }
    std::map<std::size_t, std::pair<double, double>> found;
    if (!any) return found;
    keys += '}';
    idx += '}';
    db::Result r = db.exec(std::string("SELECT q.i, r.latitude, r.longitude FROM unnest($1::") + ref.key_type +
                               "[], $2::int[]) AS q(key, i) JOIN " + ref.table + " r USING (key)",
                           {keys, idx});
    for (int row = 0; row < r.rows(); ++row)
        found[static_cast<std::size_t>(r.integer(row, 0))] = {std::stod(r.text(row, 1)), std::stod(r.text(row, 2))};
    return found;
}

}  // namespace

std::vector<ChainLink> parse_chain(const std::string& chain) {
    std::vector<ChainLink> links;
    std::size_t start = 0;
    while (start <= chain.size()) {
        std::size_t comma = chain.find(',', start);
        std::string item = chain.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        start = comma == std::string::npos ? chain.size() + 1 : comma + 1;
        if (item.empty()) throw Error(exit_usage, "--geocoder '" + chain + "' has an empty entry");
        ChainLink link;
        std::size_t colon = item.find(':');
        std::size_t equals = item.find('=');
        if (colon != std::string::npos && (equals == std::string::npos || colon < equals)) {
            link.provider = item.substr(0, colon);
            link.file = item.substr(colon + 1);
            if (link.provider != "uprn" && link.provider != "onspd")
                throw Error(exit_usage,
                            "--geocoder: '" + link.provider + "' takes no file (only uprn:FILE and onspd:FILE do)");
            if (link.file.empty() || !std::filesystem::is_regular_file(link.file))
                throw Error(exit_usage, "--geocoder: " + link.provider + " file '" + link.file + "' does not exist");
        } else {
            link.provider = item.substr(0, equals);
            if (equals != std::string::npos) link.base_url = item.substr(equals + 1);
            bool known = false;
            for (const char* name : kHttpProviders) known = known || link.provider == name;
            if (link.provider == "uprn" || link.provider == "onspd")
                throw Error(exit_usage, "--geocoder: " + link.provider + " needs a file: " + link.provider + ":FILE");
            if (!known)
                throw Error(exit_usage,
                            "--geocoder: unknown provider '" + link.provider +
                                "' (known: uprn:FILE, onspd:FILE, postcodes-io, google, nominatim, os-places)");
        }
        links.push_back(link);
    }
    return links;
}

namespace {

// The run whose staging is to be located: it must have finished loading.
long long staged_run(db::Session& session) {
    const std::optional<db::StagingOwner> owner = session.staging_owner();
    if (!owner || (owner->status != db::RunStatus::loaded && owner->status != db::RunStatus::published))
        throw Error(exit_usage, "nothing to geocode for " + std::string(cert_type_name(session.type())) +
                                    ": no completely loaded run in staging (run 'load' first)");
    return owner->run_id;
}

// One HTTP client per HTTP link of the chain (nullptr for offline links), with its API key.
std::vector<std::unique_ptr<HttpGeocoder>> make_http_geocoders(const GeocodeOptions& options) {
    std::vector<std::unique_ptr<HttpGeocoder>> http(options.chain.size());
    for (std::size_t i = 0; i < options.chain.size(); ++i) {
        const ChainLink& link = options.chain[i];
        if (!link.file.empty()) continue;
        HttpGeocoderOptions ho = options.http;
        ho.base_url = link.base_url;
        ho.rate = options.rate;
        const char* key_var = link.provider == "google"      ? "GOOGLE_API_KEY"
                              : link.provider == "os-places" ? "OS_PLACES_API_KEY"
                                                             : nullptr;
        if (key_var) {
            const char* key = std::getenv(key_var);
            if (!key || !*key)
                throw Error(exit_usage, "--geocoder " + link.provider + " needs the " + key_var + " variable");
            ho.api_key = key;
        }
        http[i] = make_http_geocoder(link.provider, ho);
        if (!http[i]) throw Error(exit_usage, "geocoder " + link.provider + " is not available");
    }
    return http;
}

// epc_geocode_todo: the distinct address keys of this release that the cache does not answer,
// behind the cursor epc_todo. Runs inside the caller's transaction.
void find_addresses_to_locate(db::Session& session, const GeocodeOptions& options, GeocodeSummary& summary) {
    db::Connection& db = session.db();
    db.exec("SET LOCAL work_mem = '256MB'");
    db.exec("SET LOCAL jit = off");
    db.exec("CREATE TEMP TABLE epc_geocode_todo ON COMMIT DROP AS SELECT address_key, min(address) AS address, "
            "min(uprn) AS uprn FROM " +
            session.staging().rows + " WHERE address_key IS NOT NULL GROUP BY address_key");
    summary.distinct_addresses = static_cast<std::uint64_t>(
        db.exec("SELECT count(*) FROM epc_geocode_todo").integer(0, 0));
    db::Result hits = db.exec(
        "DELETE FROM epc_geocode_todo t USING epc.geocode_cache c WHERE c.address_key = t.address_key AND "
        "(c.status = 'found' OR c.checked_at > now() - make_interval(days => $1))",
        {options.retry_not_found_days});
    summary.cache_hits = std::stoull(hits.affected());
    spdlog::info("geocode: {} distinct addresses, {} already in the cache, {} to locate", summary.distinct_addresses,
                 summary.cache_hits, summary.distinct_addresses - summary.cache_hits);
    db.exec("DECLARE epc_todo NO SCROLL CURSOR FOR SELECT address_key, coalesce(address, ''), uprn "
            "FROM epc_geocode_todo ORDER BY address_key");
}

std::vector<GeocodeQuery> next_queries(db::Connection& db) {
    db::Result chunk = db.exec("FETCH " + std::to_string(kChunk) + " FROM epc_todo");
    std::vector<GeocodeQuery> queries(static_cast<std::size_t>(chunk.rows()));
    for (int i = 0; i < chunk.rows(); ++i) {
        GeocodeQuery& q = queries[static_cast<std::size_t>(i)];
        q.key = chunk.text(i, 0);
        q.address = chunk.text(i, 1);
        q.postcode = q.key.substr(q.key.find('|') + 1);
        if (!chunk.is_null(i, 2)) q.uprn = static_cast<std::uint64_t>(chunk.integer(i, 2));
    }
    return queries;
}

// Walks one chunk of queries along the chain: each query stops at the first provider that finds
// it; a transient failure stops it there too (a later, coarser provider must not answer for a
// better one that was merely down); what nobody found is cached as not found.
class ChainWalk {
public:
    ChainWalk(db::Connection& db, const GeocodeOptions& options, std::vector<std::unique_ptr<HttpGeocoder>>& http,
              CacheWriter& writer, GeocodeSummary& summary)
        : db_(db), options_(options), http_(http), writer_(writer), summary_(summary) {}

    void locate(const std::vector<GeocodeQuery>& queries) {
        summary_.sent += queries.size();
        std::vector<std::size_t> remaining(queries.size());
        for (std::size_t i = 0; i < remaining.size(); ++i) remaining[i] = i;
        for (std::size_t l = 0; l < options_.chain.size() && !remaining.empty(); ++l)
            remaining = options_.chain[l].file.empty() ? ask_http(l, queries, remaining)
                                                       : look_up_reference(l, queries, remaining);
        GeocodeResult nobody_found;
        nobody_found.status = GeocodeResult::Status::not_found;
        for (std::size_t i : remaining) {
            writer_.add(queries[i].key, nobody_found, "chain");
            ++summary_.not_found;
        }
    }

private:
    void found(const GeocodeQuery& q, const GeocodeResult& r, const std::string& provider) {
        writer_.add(q.key, r, provider);
        ++summary_.found;
        ++summary_.found_by_provider[provider];
    }

    // Returns the queries the reference table does not know.
    std::vector<std::size_t> look_up_reference(std::size_t link, const std::vector<GeocodeQuery>& queries,
                                               const std::vector<std::size_t>& remaining) {
        const std::string& provider = options_.chain[link].provider;
        const auto located = lookup_reference(db_, provider, queries, remaining);
        std::vector<std::size_t> next;
        for (std::size_t i : remaining) {
            auto it = located.find(i);
            if (it == located.end()) {
                next.push_back(i);
                continue;
            }
            GeocodeResult r;
            r.status = GeocodeResult::Status::found;
            r.latitude = it->second.first;
            r.longitude = it->second.second;
            r.precision = reference_for(provider).precision;
            found(queries[i], r, provider);
        }
        return next;
    }

    // Returns the queries the provider answered "not found" (failures are not passed on).
    std::vector<std::size_t> ask_http(std::size_t link, const std::vector<GeocodeQuery>& queries,
                                      const std::vector<std::size_t>& remaining) {
        std::vector<GeocodeQuery> subset;
        subset.reserve(remaining.size());
        for (std::size_t i : remaining) subset.push_back(queries[i]);
        std::vector<std::size_t> next;
        const std::string& provider = options_.chain[link].provider;
        HttpGeocodeStats stats = http_[link]->geocode(subset, [&](std::size_t k, const GeocodeResult& r) {
            const std::size_t i = remaining[k];
            if (r.status == GeocodeResult::Status::found) found(queries[i], r, provider);
            else if (r.status == GeocodeResult::Status::not_found) next.push_back(i);
            else ++summary_.failed;
        });
        summary_.http_requests += stats.requests;
        summary_.http_429 += stats.http_429;
        return next;
    }

    db::Connection& db_;
    const GeocodeOptions& options_;
    std::vector<std::unique_ptr<HttpGeocoder>>& http_;
    CacheWriter& writer_;
    GeocodeSummary& summary_;
};

void record_summary(db::Session& session, long long run_id, const GeocodeSummary& summary) {
    const nlohmann::json counters = {{"distinct_addresses", summary.distinct_addresses},
                                     {"cache_hits", summary.cache_hits},
                                     {"sent", summary.sent},
                                     {"found", summary.found},
                                     {"not_found", summary.not_found},
                                     {"failed", summary.failed},
                                     {"http_requests", summary.http_requests},
                                     {"http_429", summary.http_429}};
    session.db().exec("UPDATE epc.import_run SET geocode = $2 WHERE run_id = $1", {run_id, counters.dump()});
    spdlog::info("geocode: {} sent, {} found, {} not found, {} failed (asked again next run); {} HTTP requests "
                 "({:.1f}/s), {} answered 429, in {:.1f} s ({:.0f} addresses/s)",
                 summary.sent, summary.found, summary.not_found, summary.failed, summary.http_requests,
                 summary.seconds > 0 ? static_cast<double>(summary.http_requests) / summary.seconds : 0.0,
                 summary.http_429, summary.seconds,
                 summary.seconds > 0 ? static_cast<double>(summary.sent) / summary.seconds : 0.0);
}

}  // namespace

GeocodeSummary geocode(db::Session& session, const GeocodeOptions& options) {
    const auto started = std::chrono::steady_clock::now();
    session.prepare_schema();
    session.lock();
    const long long run_id = staged_run(session);
    for (const ChainLink& link : options.chain)
        if (!link.file.empty()) load_reference(session.db(), link);
    std::vector<std::unique_ptr<HttpGeocoder>> http = make_http_geocoders(options);

    GeocodeSummary summary;
    db::Connection writer_db = session.connect("geocode writer");
    CacheWriter writer(writer_db, options.batch);
    ChainWalk walk(session.db(), options, http, writer, summary);
    db::Transaction tx(session.db());  // holds the cursor
    find_addresses_to_locate(session, options, summary);
    for (auto queries = next_queries(session.db()); !queries.empty(); queries = next_queries(session.db()))
        walk.locate(queries);
    writer.flush();
    tx.commit();

    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    record_summary(session, run_id, summary);
    return summary;
}

}  // namespace epc
