//! rustynet-policy (scaffold; filled in by its issue).
