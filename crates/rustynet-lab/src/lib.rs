//! rustynet-lab (scaffold; filled in by its issue).
