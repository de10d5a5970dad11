//! rustynet-control (scaffold; filled in by its issue).
