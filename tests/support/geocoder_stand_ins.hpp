// In-process stand-ins for the four HTTP geocoders (postcodes.io, Google, Nominatim, OS Places):
// each speaks its provider's request and answer formats (docs/data-formats.md §6) on 127.0.0.1,
// records every request (arrival time, target, body), tracks how many run at once, and misbehaves
// on request: latency, 429/503 with Retry-After, 5xx, malformed JSON, "no match", a connection
// cut mid-body, or a Google status such as OVER_QUERY_LIMIT.
#pragma once

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace epc::test {

class GeocoderStandIn {
public:
    enum class Kind { postcodes_io, google, nominatim, os_places };

    struct Fault {
        enum class Type { status, malformed, cut, no_match, google_status };
        Type type = Type::status;
        int code = 500;
        std::string retry_after;  // status: a Retry-After header value, if not empty
        std::string text;         // google_status: the status string

        static Fault status(int code, std::string retry_after = "") {
            return {Type::status, code, std::move(retry_after), ""};
        }
        static Fault malformed() { return {Type::malformed, 200, "", ""}; }
        static Fault cut() { return {Type::cut, 200, "", ""}; }
        static Fault no_match() { return {Type::no_match, 200, "", ""}; }
        static Fault google(std::string status) { return {Type::google_status, 200, "", std::move(status)}; }
    };

    struct Record {
        std::chrono::steady_clock::time_point at;  // arrival
        std::string method;
        std::string path;
        httplib::Params params;
        std::string body;
        std::string user_agent;

        std::string param(const std::string& name) const {
            auto it = params.find(name);
            return it == params.end() ? "" : it->second;
        }
    };

    explicit GeocoderStandIn(Kind kind, std::string api_key = "") : kind_(kind), api_key_(std::move(api_key)) {
        server_.new_task_queue = [] { return new httplib::ThreadPool(16); };
        // Without TCP_NODELAY (inherited by accepted sockets on Linux), a response written in two
        // pieces waits ~40 ms for the client's delayed ACK, which blurs every timing the tests take.
        server_.set_socket_options([](socket_t sock) {
            httplib::default_socket_options(sock);
            int yes = 1;
            setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
        });
        auto handler = [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); };
        switch (kind_) {
            case Kind::postcodes_io: server_.Post("/postcodes", handler); break;
            case Kind::google: server_.Get("/maps/api/geocode/json", handler); break;
            case Kind::nominatim: server_.Get("/search", handler); break;
            case Kind::os_places:
                server_.Get("/search/places/v1/find", handler);
                server_.Get("/search/places/v1/uprn", handler);
                break;
        }
        port_ = server_.bind_to_any_port("127.0.0.1");
        thread_ = std::thread([this] { server_.listen_after_bind(); });
        while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }

    ~GeocoderStandIn() {
        server_.stop();
        thread_.join();
    }

    GeocoderStandIn(const GeocoderStandIn&) = delete;
    GeocoderStandIn& operator=(const GeocoderStandIn&) = delete;

    std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

    // A place the stand-in knows. postcodes.io matches `match` against the postcode (ignoring case
    // and spaces); the others match when `match` occurs in the query text, or equals the UPRN for
    // OS Places' UPRN lookup. `type`: Google's location_type or Nominatim's type/addresstype.
    void add(const std::string& match, double latitude, double longitude, const std::string& type = "") {
        std::lock_guard<std::mutex> lock(mutex_);
        places_.push_back({match, latitude, longitude, type});
    }

    // The next `times` requests misbehave (queued behind earlier ones).
    void fail_next(const Fault& fault, int times = 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (int i = 0; i < times; ++i) faults_.push_back(fault);
    }
    // Every request misbehaves until clear_faults().
    void always(const Fault& fault) {
        std::lock_guard<std::mutex> lock(mutex_);
        always_ = fault;
    }
    void clear_faults() {
        std::lock_guard<std::mutex> lock(mutex_);
        faults_.clear();
        always_.reset();
    }
    void set_latency(std::chrono::milliseconds latency) { latency_ms_ = static_cast<int>(latency.count()); }

    std::size_t count() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return records_.size();
    }
    std::vector<Record> records() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return records_;
    }
    int max_concurrent() const { return max_concurrent_; }

private:
    struct Place {
        std::string match;
        double latitude, longitude;
        std::string type;
    };

    static std::string compact(const std::string& s) {
        std::string out;
        for (char c : s)
            if (!std::isspace(static_cast<unsigned char>(c)))
                out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        return out;
    }

    void handle(const httplib::Request& req, httplib::Response& res) {
        int now_running = ++concurrent_;
        for (int seen = max_concurrent_;
             now_running > seen && !max_concurrent_.compare_exchange_weak(seen, now_running);) {
        }
        struct Leave {
            std::atomic<int>& n;
            ~Leave() { --n; }
        } leave{concurrent_};

        std::optional<Fault> fault;
        std::vector<Place> places;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            records_.push_back({std::chrono::steady_clock::now(), req.method, req.path, req.params, req.body,
                                req.get_header_value("User-Agent")});
            if (!faults_.empty()) {
                fault = faults_.front();
                faults_.pop_front();
            } else {
                fault = always_;
            }
            places = places_;
        }
        if (latency_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(latency_ms_.load()));

        if (fault && fault->type == Fault::Type::status) {
            res.status = fault->code;
            if (!fault->retry_after.empty()) res.set_header("Retry-After", fault->retry_after);
            res.set_content("{\"error\":\"stand-in says " + std::to_string(fault->code) + "\"}", "application/json");
            return;
        }
        if (fault && fault->type == Fault::Type::malformed) {
            res.set_content("{\"result\": [ {\"query\": \"trunc", "application/json");
            return;
        }
        if (fault && fault->type == Fault::Type::cut) {
            // Announce a long body, send a piece, then drop the connection.
            res.set_content_provider(100000, "application/json",
                                     [](std::size_t offset, std::size_t, httplib::DataSink& sink) {
                                         if (offset > 0) return false;
                                         sink.write("{\"status\":", 10);
                                         return true;
                                     });
            return;
        }
        if (fault && fault->type == Fault::Type::no_match) places.clear();

        if (kind_ == Kind::google || kind_ == Kind::os_places) {
            if (req.get_param_value("key") != api_key_) {
                if (kind_ == Kind::google) {
                    reply(res, {{"status", "REQUEST_DENIED"},
                                {"error_message", "The provided API key is invalid."},
                                {"results", nlohmann::json::array()}});
                } else {
                    res.status = 401;
                    reply(res, {{"fault", {{"faultstring", "Invalid ApiKey"}}}});
                }
                return;
            }
        }
        if (kind_ == Kind::google && fault && fault->type == Fault::Type::google_status) {
            reply(res, {{"status", fault->text}, {"results", nlohmann::json::array()}});
            return;
        }
        switch (kind_) {
            case Kind::postcodes_io: answer_postcodes(req, res, places); break;
            case Kind::google: answer_google(req, res, places); break;
            case Kind::nominatim: answer_nominatim(req, res, places); break;
            case Kind::os_places: answer_os_places(req, res, places); break;
        }
    }

    static void reply(httplib::Response& res, const nlohmann::json& body) {
        res.set_content(body.dump(), "application/json");
    }

    static const Place* find_text(const std::vector<Place>& places, const std::string& text) {
        for (const auto& p : places)
            if (text.find(p.match) != std::string::npos) return &p;
        return nullptr;
    }

    void answer_postcodes(const httplib::Request& req, httplib::Response& res, const std::vector<Place>& places) {
        auto body = nlohmann::json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.is_object() || !body["postcodes"].is_array()) {
            res.status = 400;
            reply(res,
                  {{"status", 400},
                   {"error", "Invalid JSON submitted. You need to submit a JSON object with an array of postcodes"}});
            return;
        }
        if (body["postcodes"].size() > 100) {  // as the real service does
            res.status = 400;
            reply(res,
                  {{"status", 400},
                   {"error", "Too many postcodes submitted. Up to 100 postcodes can be bulk requested at a time"}});
            return;
        }
        nlohmann::json result = nlohmann::json::array();
        for (const auto& q : body["postcodes"]) {
            std::string pc = q.is_string() ? q.get<std::string>() : "";
            nlohmann::json r = nullptr;
            for (const auto& p : places)
                if (compact(p.match) == compact(pc))
                    r = {{"postcode", p.match},
                         {"quality", 1},
                         {"country", "England"},
                         {"latitude", p.latitude},
                         {"longitude", p.longitude}};
            result.push_back({{"query", pc}, {"result", r}});
        }
        reply(res, {{"status", 200}, {"result", result}});
    }

    void answer_google(const httplib::Request& req, httplib::Response& res, const std::vector<Place>& places) {
        const Place* p = find_text(places, req.get_param_value("address"));
        if (!p) {
            reply(res, {{"status", "ZERO_RESULTS"}, {"results", nlohmann::json::array()}});
            return;
        }
        nlohmann::json location = {{"lat", p->latitude}, {"lng", p->longitude}};
        nlohmann::json result = {
            {"formatted_address", p->match + ", UK"},
            {"geometry", {{"location", location}, {"location_type", p->type.empty() ? "ROOFTOP" : p->type}}},
            {"types", nlohmann::json::array({"street_address"})}};
        reply(res, {{"status", "OK"}, {"results", nlohmann::json::array({result})}});
    }

    void answer_nominatim(const httplib::Request& req, httplib::Response& res, const std::vector<Place>& places) {
        if (req.get_header_value("User-Agent").empty()) {  // the public server blocks anonymous clients
            res.status = 403;
            res.set_content("Access blocked", "text/plain");
            return;
        }
        const Place* p = find_text(places, req.get_param_value("q"));
        if (!p) {
            reply(res, nlohmann::json::array());
            return;
        }
        std::string type = p->type.empty() ? "house" : p->type;
        nlohmann::json place = {{"place_id", 1},
                                {"lat", std::to_string(p->latitude)},
                                {"lon", std::to_string(p->longitude)},
                                {"category", type == "house" ? "place" : "highway"},
                                {"type", type},
                                {"addresstype", type == "house" ? "place" : "road"},
                                {"display_name", p->match}};
        reply(res, nlohmann::json::array({place}));
    }

    void answer_os_places(const httplib::Request& req, httplib::Response& res, const std::vector<Place>& places) {
        bool by_uprn = req.path == "/search/places/v1/uprn";
        nlohmann::json header = {{"uri", req.path},
                                 {"query", by_uprn ? req.get_param_value("uprn") : req.get_param_value("query")},
                                 {"offset", 0},
                                 {"totalresults", 0}};
        const Place* p = nullptr;
        for (const auto& place : places)
            if (by_uprn ? place.match == req.get_param_value("uprn")
                        : req.get_param_value("query").find(place.match) != std::string::npos)
                p = &place;
        if (!p || req.get_param_value("output_srs") != "EPSG:4326") {
            reply(res, {{"header", header}});  // no `results` key at all, as the real API
            return;
        }
        header["totalresults"] = 1;
        nlohmann::json dpa = {{"UPRN", "100000000001"},
                              {"ADDRESS", p->match},
                              {"LAT", p->latitude},
                              {"LNG", p->longitude},
                              {"MATCH", 1.0}};
        reply(res, {{"header", header}, {"results", nlohmann::json::array({nlohmann::json{{"DPA", dpa}}})}});
    }

    Kind kind_;
    std::string api_key_;
    httplib::Server server_;
    int port_ = 0;
    std::thread thread_;
    mutable std::mutex mutex_;
    std::vector<Place> places_;
    std::deque<Fault> faults_;
    std::optional<Fault> always_;
    std::vector<Record> records_;
    std::atomic<int> latency_ms_{0};
    std::atomic<int> concurrent_{0};
    std::atomic<int> max_concurrent_{0};
};

}  // namespace epc::test
