#include "epc/status/status.hpp"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <sstream>

#include "epc/db/connection.hpp"
#include "epc/db/runs.hpp"
#include "epc/db/schema.hpp"
#include "epc/db/session.hpp"
#include "epc/db/transaction.hpp"
#include "epc/extract/release.hpp"
#include "epc/publish/publish.hpp"

namespace epc {

namespace {

using nlohmann::json;

// The precisions a geocoder reports (epc.geocode_cache.precision), finest first.
constexpr const char* kPrecisions[] = {"property", "street", "postcode"};

// A connection that cannot write, waits for no lock longer than a moment, and reports times in UTC.
db::Connection read_only_connection(const std::string& conninfo) {
    db::Connection db(conninfo, "epc-import status");
    db.exec("SET default_transaction_read_only = on");
    db.exec("SET lock_timeout = '3s'");
    db.exec("SET TIME ZONE 'UTC'");
    return db;
}

// A run's row as JSON, whatever the schema version: an older database lacks later columns (rows_changed
// came with version 3), and reading the whole row avoids naming a column that may not be there.
json run_row(db::Connection& db, CertType type, std::optional<db::RunStatus> status) {
    std::string sql = "SELECT to_jsonb(r)::text FROM epc.import_run r WHERE r.cert_type = $1";
    db::Params params = {cert_type_name(type)};
    if (status) {
        sql += " AND r.status = $2";
        params.emplace_back(db::run_status_name(*status));
    }
    db::Result r = db.exec(sql + " ORDER BY r.run_id DESC LIMIT 1", params);
    return r.rows() == 0 ? json() : json::parse(r.text(0, 0));
}

json field(const json& row, const char* name) { return row.contains(name) ? row[name] : json(); }

// The rejects of a run by reason, while staging still belongs to it (the next load rebuilds the
// reject table); null when it does not, since only the total is kept in epc.import_run. Counted
// first, owner checked after: the count's lock on the reject table lasts until the transaction
// ends, and a new load replaces that table and staging's owner in one transaction, so an owner
// still equal to run_id afterwards means the counts are that run's. A reject table dropped under
// the count is the same case: a new load took staging.
json rejects_by_reason(db::Connection& db, CertType type, long long run_id) {
    const std::string rejects = db::staging_tables(type).rejects;
    try {
        db::Transaction tx(db);
        if (!db.has_table(rejects)) return json();
        json by_reason = json::object();
        db::Result r = db.exec("SELECT reason, count(*) FROM " + rejects + " GROUP BY reason ORDER BY reason");
        for (int i = 0; i < r.rows(); ++i) by_reason[r.text(i, 0)] = r.integer(i, 1);
        db::Result owner = db.exec("SELECT run_id FROM epc.staging_owner WHERE cert_type = $1", {cert_type_name(type)});
        tx.commit();
        return owner.rows() > 0 && owner.integer(0, 0) == run_id ? by_reason : json();
    } catch (const Error&) {
        if (!db.ok()) throw;  // the database went away: the whole command is transient
        return json();
    }
}

json published_run(db::Connection& db, CertType type, const json& run) {
    const long long run_id = run["run_id"].get<long long>();
    return {{"run_id", run_id},
            {"source", field(run, "source")},
            {"release_last_updated", field(run, "release_last_updated")},
            {"archive_bytes", field(run, "archive_bytes")},
            {"archive_sha256", field(run, "archive_sha256")},
            {"archive_path", field(run, "archive_path")},
            {"published_at", field(run, "published_at")},
            {"rows_published", field(run, "rows_published")},
            {"added", field(run, "rows_added")},
            {"changed", field(run, "rows_changed")},
            {"disappeared", field(run, "rows_disappeared")},
            {"rejects", {{"total", field(run, "rows_rejected")}, {"by_reason", rejects_by_reason(db, type, run_id)}}}};
}

json newest_run(const json& run) {
    return {{"run_id", run["run_id"]},
            {"status", field(run, "status")},
            {"started_at", field(run, "started_at")},
            {"finished_at", field(run, "finished_at")},
            {"rows_loaded", field(run, "rows_loaded")},
            {"rows_rejected", field(run, "rows_rejected")},
            {"error", field(run, "error")}};
}

// How many production certificates each precision located, in one pass over the table. A row
// counts as located when it has coordinates; "other" is a located row of a precision this
// binary does not know (a newer geocoder).
json production_counts(db::Connection& db, const std::string& table) {
    const std::string has_coordinates = "latitude IS NOT NULL AND longitude IS NOT NULL";
    std::string sql = "SELECT count(*), count(*) FILTER (WHERE NOT (" + has_coordinates + "))";
    for (const char* precision : kPrecisions)
        sql += ", count(*) FILTER (WHERE " + has_coordinates + " AND geocode_precision = '" + precision + "')";
    db::Result r = db.exec(sql + " FROM " + table);
    const long long rows = r.integer(0, 0);
    auto share = [rows](long long n) {
        json j = {{"rows", n}, {"share", rows > 0 ? static_cast<double>(n) / static_cast<double>(rows) : 0.0}};
        return j;
    };
    json located = json::object();
    long long known = r.integer(0, 1);
    for (int i = 0; i < 3; ++i) {
        located[kPrecisions[i]] = share(r.integer(0, i + 2));
        known += r.integer(0, i + 2);
    }
    located["not_located"] = share(r.integer(0, 1));
    located["other"] = share(rows - known);
    return {{"rows", rows}, {"located", located}};
}

// A production table as readers see it now (null when it does not exist); an error (a publish's
// DDL holding the table past lock_timeout) is shown for this type rather than failing the command.
json read_table(db::Connection& db, const std::string& table, const std::function<json()>& read) {
    try {
        if (!db.has_table(table)) return json();
        return read();
    } catch (const Error& e) {
        if (!db.ok()) throw;  // the database went away: the whole command is transient
        return {{"error", e.what()}};
    }
}

json production(db::Connection& db, const std::string& table) {
    return read_table(db, table, [&] { return production_counts(db, table); });
}

// The published recommendations (--recommendations), when a publish has made their table.
json recommendations(db::Connection& db, CertType type) {
    const std::string table = recommendation_tables(type).production;
    return read_table(db, table, [&] {
        return json{{"table", table}, {"rows", db.exec("SELECT count(*) FROM " + table).integer(0, 0)}};
    });
}

// Whether the publisher offers a release the last published (or reverted) run did not import,
// exactly as check-release decides it.
json publisher_freshness(db::Connection& db, CertType type, const StatusRequest& request) {
    json j = {{"source", source_name(request.source)}, {"state", "unknown"}, {"offered", json()}, {"reason", json()}};
    try {
        const ReleaseInfo offered = request.ask_publisher(type);
        j["offered"] = {{"last_updated", offered.last_updated}, {"size", offered.size}};
        j["state"] = is_new_release(offered, request.source, db::last_published_release(db, type)) ? "newer"
                                                                                                   : "up_to_date";
    } catch (const std::exception& e) {
        j["reason"] = e.what();
    }
    return j;
}

json type_status(db::Connection& db, CertType type, bool prepared, const StatusRequest& request) {
    const std::string table = production_table(type);
    json t = {{"cert_type", cert_type_name(type)},
              {"table", table},
              {"imported", false},
              {"published", json()},
              {"production", json()},
              {"recommendations", json()},
              {"newest_run", json()}};
    if (prepared) {
        const json published = run_row(db, type, db::RunStatus::published);
        const json newest = run_row(db, type, std::nullopt);
        t["imported"] = !newest.is_null();
        if (!published.is_null()) t["published"] = published_run(db, type, published);
        if (!newest.is_null() && (published.is_null() || newest["run_id"] != published["run_id"]))
            t["newest_run"] = newest_run(newest);
        t["production"] = production(db, table);
        t["recommendations"] = recommendations(db, type);
    }
    t["publisher"] = publisher_freshness(db, type, request);
    return t;
}

// --- Text ---

std::string text_of(const json& v) {
    if (v.is_null()) return "-";
    if (v.is_string()) return v.get<std::string>();
    return v.dump();
}

// A count as people read it at a glance: 28,000,000.
std::string count_of(const json& v) {
    if (!v.is_number_integer()) return text_of(v);
    std::string digits = v.dump();
    const std::size_t first = digits[0] == '-' ? 1 : 0;
    for (std::size_t i = digits.size(); i > first + 3; i -= 3) digits.insert(i - 3, ",");
    return digits;
}

// "2026-11-30T13:20:01.123+00:00" as "2026-11-30 13:20:01 UTC".
std::string when(const json& v) {
    if (!v.is_string()) return "-";
    std::string s = v.get<std::string>().substr(0, 19);
    if (s.size() > 10) s[10] = ' ';
    return s + " UTC";
}

std::string percent(double share) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.1f%%", share * 100.0);
    return buf;
}

std::string release_text(const json& p) {
    std::string release = text_of(p["source"]);
    if (p["release_last_updated"].is_string()) release += " " + p["release_last_updated"].get<std::string>();
    else if (p["source"] == "file" && p["archive_path"].is_string()) release += " " + text_of(p["archive_path"]);
    return release + ", " + count_of(p["archive_bytes"]) + " bytes";
}

std::string rejects_text(const json& rejects) {
    std::string s = count_of(rejects["total"]);
    if (!rejects["by_reason"].is_object() || rejects["by_reason"].empty()) return s;
    std::string reasons;
    for (const auto& [reason, n] : rejects["by_reason"].items())
        reasons += (reasons.empty() ? "" : ", ") + reason + " " + count_of(n);
    return s + ": " + reasons;
}

std::string located_text(const json& located) {
    std::string s;
    for (const char* key : {"property", "street", "postcode", "not_located", "other"}) {
        const json& b = located[key];
        if (std::string(key) == "other" && b["rows"] == 0) continue;
        if (!s.empty()) s += ", ";
        s += (std::string(key) == "not_located" ? std::string("not located") : key) + " " + count_of(b["rows"]) + " (" +
             percent(b["share"].get<double>()) + ")";
    }
    return s;
}

std::string newest_text(const json& n) {
    const std::string status = text_of(n["status"]);
    std::string s = text_of(n["run_id"]) + ": " + status;
    if (status == db::run_status_name(db::RunStatus::loaded)) s += ", not published";
    s += " (started " + when(n["started_at"]) + ", " + count_of(n["rows_loaded"]) + " rows loaded)";
    if (n["error"].is_string()) s += ": " + n["error"].get<std::string>();
    return s;
}

std::string publisher_text(const json& p) {
    const std::string state = p["state"];
    if (state == "unknown") return "unknown: " + text_of(p["reason"]);
    const json& offered = p["offered"];
    const std::string last_updated = text_of(offered["last_updated"]);  // empty from the legacy service
    const std::string release = (last_updated.empty() ? std::string() : last_updated + ", ") +
                                count_of(offered["size"]) + " bytes";
    return state == "newer" ? "newer release " + release + " (" + text_of(p["source"]) + " service)"
                            : "up to date: the " + text_of(p["source"]) + " service offers " + release;
}

void line(std::ostringstream& out, const char* label, const std::string& value) {
    char padded[24];
    std::snprintf(padded, sizeof padded, "  %-16s", label);
    out << padded << value << '\n';
}

void type_text(std::ostringstream& out, const json& t) {
    out << text_of(t["cert_type"]) << "  (" << text_of(t["table"]) << ")\n";
    if (!t["imported"].get<bool>()) line(out, "imported", "never");
    const json& p = t["published"];
    if (p.is_null() && t["imported"].get<bool>()) line(out, "published", "nothing published yet");
    if (!p.is_null()) {
        line(out, "published run", text_of(p["run_id"]) + " at " + when(p["published_at"]));
        line(out, "release", release_text(p));
        line(out, "rows published",
             count_of(p["rows_published"]) + ": " + count_of(p["added"]) + " added, " + count_of(p["changed"]) +
                 " changed, " + count_of(p["disappeared"]) + " disappeared");
        line(out, "rejects", rejects_text(p["rejects"]));
    }
    const json& prod = t["production"];
    if (prod.is_object() && prod.contains("error")) line(out, "production", "not read: " + text_of(prod["error"]));
    else if (prod.is_object()) {
        line(out, "production", count_of(prod["rows"]) + " rows");
        line(out, "located", located_text(prod["located"]));
    }
    const json& recs = t["recommendations"];
    if (recs.is_object() && recs.contains("error")) line(out, "recommendations", "not read: " + text_of(recs["error"]));
    else if (recs.is_object())
        line(out, "recommendations", count_of(recs["rows"]) + " rows (" + text_of(recs["table"]) + ")");
    if (!t["newest_run"].is_null()) line(out, "newest run", newest_text(t["newest_run"]));
    line(out, "publisher", publisher_text(t["publisher"]));
}

// One row per type, to see all of them at a glance before the detail.
std::vector<std::string> overview_row(const json& t) {
    const json& p = t["published"];
    const json& prod = t["production"];
    const json& newest = t["newest_run"];
    std::string located = "-";
    if (prod.is_object() && prod.contains("located") && prod["rows"] != 0)
        located = percent(1.0 - prod["located"]["not_located"]["share"].get<double>());
    std::string release = "-";
    if (!p.is_null())
        release = p["release_last_updated"].is_string() ? text_of(p["release_last_updated"]) : text_of(p["source"]);
    const std::string state = text_of(t["publisher"]["state"]);
    return {text_of(t["cert_type"]),
            t["imported"].get<bool>() ? (p.is_null() ? "none" : text_of(p["run_id"])) : "never imported",
            release,
            prod.is_object() && prod.contains("rows") ? count_of(prod["rows"]) : "-",
            located,
            newest.is_null() ? "-" : text_of(newest["run_id"]) + " " + text_of(newest["status"]),
            state == "up_to_date" ? "up to date" : state};
}

void overview_table(std::ostringstream& out, const json& types) {
    std::vector<std::vector<std::string>> rows = {
        {"type", "published run", "release", "production rows", "located", "newest run", "publisher"}};
    for (const json& t : types) rows.push_back(overview_row(t));
    std::vector<std::size_t> widths(rows[0].size(), 0);
    for (const auto& row : rows)
        for (std::size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
    for (const auto& row : rows) {
        std::string text;
        for (std::size_t c = 0; c < row.size(); ++c)
            text += row[c] + (c + 1 < row.size() ? std::string(widths[c] - row[c].size() + 2, ' ') : "");
        out << text << '\n';
    }
}

}  // namespace

nlohmann::json read_status(const std::string& conninfo, const StatusRequest& request) {
    db::Connection db = read_only_connection(conninfo);
    const int version = db::database_schema_version(db);
    json status = {{"database",
                    {{"describe", db.describe()},
                     {"schema_version", version},
                     {"known_schema_version", db::current_schema_version()},
                     {"prepared", version > 0}}},
                   {"types", json::array()}};
    for (CertType type : request.types) status["types"].push_back(type_status(db, type, version > 0, request));
    return status;
}

std::string status_text(const nlohmann::json& status) {
    std::ostringstream out;
    const json& database = status["database"];
    out << "database " << text_of(database["describe"]);
    const int version = database["schema_version"].get<int>();
    const int known = database["known_schema_version"].get<int>();
    if (version == 0) out << ": never prepared by epc-import (no epc schema); nothing imported\n";
    else if (version < known)
        out << ", schema version " << version << " (this epc-import writes " << known
            << "; its next import upgrades it)\n";
    else if (version > known)
        out << ", schema version " << version << ", newer than this epc-import knows (" << known
            << "): figures may be incomplete\n";
    else out << ", schema version " << version << "\n";
    if (status["types"].size() > 1) {
        out << '\n';
        overview_table(out, status["types"]);
    }
    for (const json& t : status["types"]) {
        out << '\n';
        type_text(out, t);
    }
    return out.str();
}

}  // namespace epc
