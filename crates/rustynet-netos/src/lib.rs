//! rustynet-netos (scaffold; filled in by its issue).
