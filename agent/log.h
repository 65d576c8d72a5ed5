// Agent logging: one line per call on stderr (the guest's serial console),
// prefixed "vmfactory-agent: ". printf-style, no allocation beyond a stack
// buffer, safe to call from anywhere in the agent (not from a forked child).
#pragma once

namespace vmf::agent {

void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Silences Log (used by unit tests that provoke errors on purpose).
void SetLogEnabled(bool enabled);

}  // namespace vmf::agent
