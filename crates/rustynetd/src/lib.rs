//! rustynetd (scaffold; filled in by its issue).
