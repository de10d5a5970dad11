//! rustynet-tunnel (scaffold; filled in by its issue).
