#include "epc/common/types.hpp"

namespace epc {

std::string_view cert_type_name(CertType type) {
    switch (type) {
        case CertType::domestic: return "domestic";
        case CertType::non_domestic: return "non-domestic";
        case CertType::display: return "display";
    }
    return "?";
}

std::string_view cert_type_sql(CertType type) {
    switch (type) {
        case CertType::domestic: return "domestic";
        case CertType::non_domestic: return "non_domestic";
        case CertType::display: return "display";
    }
    return "?";
}

std::optional<CertType> parse_cert_type(std::string_view name) {
    if (name == "domestic") return CertType::domestic;
    if (name == "non-domestic") return CertType::non_domestic;
    if (name == "display") return CertType::display;
    return std::nullopt;
}

std::string_view layout_name(Layout layout) {
    switch (layout) {
        case Layout::legacy: return "legacy";
        case Layout::current: return "current";
        case Layout::single: return "single";
    }
    return "?";
}

std::string_view dataset_name(Dataset dataset) {
    return dataset == Dataset::certificates ? "certificates" : "recommendations";
}

}  // namespace epc
