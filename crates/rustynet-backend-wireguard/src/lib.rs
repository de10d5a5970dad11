//! rustynet-backend-wireguard (scaffold; filled in by its issue).
