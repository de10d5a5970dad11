//! rustynet-cli (scaffold; filled in by its issue).
