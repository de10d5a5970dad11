//! Where the store lives: the data directory's SQLite file unless a
//! PostgreSQL connection string is given (`--database`, or `database` in
//! the configuration file).

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::StoreError;
use super::postgres::PostgresStore;

/// A PostgreSQL connection string, as a URL (`postgres://user@host/db`) or
/// as `key=value` pairs (`host=… dbname=…`). It may carry a password, so it
/// is never shown: `Debug` and [`DatabaseUrl::describe`] leave it out, and
/// it is wiped from memory when dropped.
#[derive(Clone)]
pub struct DatabaseUrl(Zeroizing<String>);

impl DatabaseUrl {
    /// Checks that `text` is a connection string the driver accepts.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let url = Self(Zeroizing::new(text.to_owned()));
        url.config()?;
        Ok(url)
    }

    /// The driver's configuration.
    pub(crate) fn config(&self) -> Result<::postgres::Config, StoreError> {
        // The driver's parse errors name the option, never its value.
        ::postgres::Config::from_str(&self.0).map_err(|e| StoreError::BadDatabaseUrl(e.to_string()))
    }

    /// `user@host:port/dbname`, without the password: for logs and errors.
    pub fn describe(&self) -> String {
        let Ok(config) = self.config() else {
            return "(invalid connection string)".into();
        };
        describe(&config)
    }
}

/// `user@host:port/dbname` of a driver configuration (no password).
pub(crate) fn describe(config: &::postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            ::postgres::config::Host::Tcp(name) => name.clone(),
            ::postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("(default user)"),
        config.get_dbname().unwrap_or("(default database)")
    )
}

impl FromStr for DatabaseUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.describe())
    }
}

/// Opens (migrating) the PostgreSQL store at `url`.
pub fn open_postgres(url: &DatabaseUrl) -> Result<PostgresStore, StoreError> {
    PostgresStore::open(url.config()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let url = DatabaseUrl::parse("postgres://rn:s3cret@db.example:6543/control").unwrap();
        assert_eq!(url.describe(), "rn@db.example:6543/control");
        assert!(!format!("{url:?}").contains("s3cret"));
        let kv = DatabaseUrl::parse("host=/run/pg user=rn password=s3cret dbname=c").unwrap();
        assert_eq!(kv.describe(), "rn@/run/pg:5432/c");
    }

    #[test]
    fn malformed_strings_are_refused_without_echoing_them() {
        for bad in [
            "postgres://rn:s3cret@host:notaport/db",
            "host='unterminated",
        ] {
            let err = DatabaseUrl::parse(bad).unwrap_err();
            assert!(matches!(err, StoreError::BadDatabaseUrl(_)), "{bad}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }
}
