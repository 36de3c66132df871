//! The reliability scenarios: churn soaks, faults, hostile input, limits
//! under concurrency, security (RELIABILITY.md lists them).

mod churn;
mod faults;
mod hostile;
mod limits;
mod security;
