//! rustynet-dns (scaffold; filled in by its issue).
