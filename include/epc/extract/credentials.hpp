// The publisher's credentials: from the environment and/or a KEY=VALUE file (--credentials-file).
// Which service takes which, and how they are sent, is the download's business (download.hpp).
#pragma once

#include <string>

namespace epc {

struct Credentials {
    std::string token;    // current service: Bearer token (EPC_TOKEN)
    std::string email;    // legacy service: account e-mail (EPC_API_EMAIL)
    std::string api_key;  // legacy service: API key (EPC_API_KEY)
    // legacy service, older accounts: the token of the emailed login-with-token link
    // (EPC_LOGIN_TOKEN), exchanged for a session cookie; used when there is no API key.
    std::string login_token;
};

// EPC_TOKEN, EPC_API_EMAIL, EPC_API_KEY, EPC_LOGIN_TOKEN; unset variables leave the field empty.
Credentials credentials_from_env();
// KEY=VALUE lines with the same names as the variables; blank lines and lines starting with '#'
// are skipped, surrounding spaces and one pair of quotes around the value are removed. Unknown
// keys are ignored. Throws Error(exit_usage) when the file cannot be read or a line has no '='
// (the message names the line number, never its content).
Credentials credentials_from_file(const std::string& path);
// Fields set in `overrides` win over those in `base` (e.g. file over environment).
Credentials merge_credentials(Credentials base, const Credentials& overrides);

}  // namespace epc
