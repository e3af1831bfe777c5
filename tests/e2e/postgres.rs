//! The fleet tests' PostgreSQL: the library's throwaway cluster (`phiwatch::bench::postgres`),
//! a data directory under the test's own temporary directory, on loopback only.
#![allow(dead_code)]

pub use phiwatch::bench::postgres::ServerTls;
use phiwatch::bench::postgres::Throwaway;

pub struct Postgres(Throwaway);

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    pub fn start_with(tls: Option<ServerTls>) -> Postgres {
        Postgres(Throwaway::start(tls).unwrap_or_else(|e| panic!("{e:#}")))
    }

    pub fn port(&self) -> u16 {
        self.0.port
    }

    pub fn url(&self) -> String {
        self.0.url()
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.0.psql(db, sql).unwrap_or_else(|e| panic!("{e:#}"))
    }
}
