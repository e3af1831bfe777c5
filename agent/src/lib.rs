//! phiwatch: detects improper access to patient records.
//!
//! The data path reads top to bottom, one module per stage:
//! [`decode`] (AuditEvent lines → [`event::AccessEvent`]) → [`enrich`] (context facts from
//! [`context`]) → [`detect`] (Cedar policy pack) → [`finding::Finding`] → [`store`].
//! [`scan`] wires the stages for a replay; [`demo`] builds a synthetic hospital to exercise them.

pub mod alert;
pub mod backtest;
pub mod bench;
pub mod case;
pub mod check;
pub mod config;
pub mod console;
pub mod context;
pub mod coverage;
pub mod decode;
pub mod demo;
pub mod detect;
pub mod enrich;
pub mod errors;
pub mod event;
pub mod fault;
pub mod fhir;
pub mod finding;
pub mod fleet;
pub mod invalid;
pub mod layers;
pub mod metrics;
pub mod mine;
pub mod mllp;
pub mod net;
pub mod noise;
pub mod notify;
pub mod outbox;
pub mod pipeline;
pub mod plugin;
pub mod quarantine;
pub mod reload;
pub mod run;
pub mod scaffold;
pub mod scan;
pub mod settings;
pub mod source;
pub mod spool;
pub mod store;
pub mod syslog;
pub mod tabular;
pub mod tail;
pub mod time;
pub mod tls;
pub mod trial;
pub mod watch;
