//! The statements PostgreSQL clients send that are about the session rather than data:
//! `SET`/`RESET`/`SHOW <setting>`, `BEGIN`/`COMMIT`/`ROLLBACK`, `DISCARD`, `DEALLOCATE`,
//! `SELECT version()`, and PostgreSQL features StreamCell does not have, which get a clear
//! `0A000` instead of a confusing syntax error.
//!
//! StreamCell has no multi-statement transactions: every statement takes effect when it
//! runs. `BEGIN` and `COMMIT` are accepted (drivers send them around everything) and only
//! change the transaction status the client sees; `ROLLBACK` undoes nothing. Savepoints
//! follow the same rule: `SAVEPOINT`, `RELEASE` and `ROLLBACK TO` are accepted inside a
//! transaction block with PostgreSQL's checks (a block must be open, the savepoint must
//! exist) and `ROLLBACK TO` leaves a failed block usable again, but undoes nothing.

use std::collections::BTreeMap;

use crate::error::PgError;

/// The PostgreSQL version StreamCell answers as (what clients check for features).
pub const SERVER_VERSION: &str = "16.6";

/// A session statement, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Compat {
    /// `SET name = value` (the command tag is `SET`).
    Set {
        /// Setting name, lower case.
        name: String,
        /// Its new value.
        value: String,
    },
    /// `RESET name` / `RESET ALL`.
    Reset(Option<String>),
    /// `SHOW name` / `SHOW ALL`.
    Show(Option<String>),
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END` (`ROLLBACK`, `ABORT`: `rollback` true).
    End {
        /// Whether it was a rollback.
        rollback: bool,
    },
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name`.
    RollbackTo(String),
    /// `CLOSE name`: StreamCell has no SQL-level cursors, so never one of that name.
    Close(String),
    /// Accepted and ignored, answered with this command tag (`DISCARD ALL`, `DEALLOCATE`,
    /// `CLOSE ALL`, `UNLISTEN`).
    Ignored(&'static str),
    /// `SELECT version()`.
    Version,
}

impl Compat {
    /// Whether it may run in a failed transaction block (everything else is refused with
    /// `25P02` until the block ends or rolls back to a savepoint).
    pub fn allowed_when_aborted(&self) -> bool {
        matches!(self, Compat::End { .. } | Compat::RollbackTo(_))
    }
}

/// Words at the start of a statement, upper case, skipping whitespace (at most `n`).
fn words(sql: &str, n: usize) -> Vec<String> {
    sql.split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .take(n)
        .map(str::to_ascii_uppercase)
        .collect()
}

/// The session statement `sql` is, if it is one; `Err` for a PostgreSQL feature StreamCell
/// does not have. `None`: a statement for the engine.
pub fn classify(sql: &str) -> Result<Option<Compat>, PgError> {
    let w = words(sql, 4);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let unsupported = |what: &str, instead: &str| {
        Err(PgError::Unsupported(format!(
            "{what} is not supported by StreamCell{instead}"
        )))
    };
    Ok(Some(match w.as_slice() {
        ["SET", ..] => return set(sql).map(Some),
        ["RESET", "ALL", ..] => Compat::Reset(None),
        ["RESET", name, ..] => Compat::Reset(Some(name.to_ascii_lowercase())),
        ["SHOW", "STREAMS" | "QUERIES" | "VIEWS" | "CONNECTORS", ..] => return Ok(None),
        ["SHOW", "ALL", ..] => Compat::Show(None),
        // The special forms of SHOW: their settings under other names.
        ["SHOW", "TRANSACTION", "ISOLATION", "LEVEL"] => {
            Compat::Show(Some("transaction_isolation".into()))
        }
        ["SHOW", "TIME", "ZONE"] => Compat::Show(Some("timezone".into())),
        ["SHOW", "SESSION", "AUTHORIZATION"] => Compat::Show(Some("session_authorization".into())),
        ["SHOW", ..] => {
            // After the word SHOW (what `words` skipped before it: blanks and parentheses).
            let body = statement_body(sql);
            let name = body.get(4..).unwrap_or("").trim();
            Compat::Show(Some(name.trim_matches('"').to_ascii_lowercase()))
        }
        ["BEGIN", ..] | ["START", "TRANSACTION", ..] => Compat::Begin,
        ["COMMIT", ..] | ["END", ..] => Compat::End { rollback: false },
        ["ROLLBACK", ..] if w.contains(&"TO") => Compat::RollbackTo(savepoint_name(sql, "TO")?),
        ["ROLLBACK", ..] | ["ABORT", ..] => Compat::End { rollback: true },
        ["SAVEPOINT", ..] => Compat::Savepoint(savepoint_name(sql, "SAVEPOINT")?),
        ["RELEASE", ..] => Compat::Release(savepoint_name(sql, "RELEASE")?),
        ["CLOSE", "ALL"] => Compat::Ignored("CLOSE CURSOR ALL"),
        ["CLOSE", _] => Compat::Close(savepoint_name(sql, "CLOSE")?),
        // Nothing is ever listened to, so stopping to listen always succeeds.
        ["UNLISTEN", _] => Compat::Ignored("UNLISTEN"),
        ["DISCARD", ..] => Compat::Ignored("DISCARD ALL"),
        ["DEALLOCATE", ..] => Compat::Ignored("DEALLOCATE"),
        ["SELECT", ..] if is_version(sql) => Compat::Version,
        ["UPDATE" | "DELETE" | "MERGE" | "TRUNCATE", ..] => return unsupported(
            w[0],
            ": streams are append-only and their records immutable (retention removes old records)",
        ),
        ["COPY", ..] => return unsupported("COPY", "; use INSERT or the gRPC append API"),
        ["LISTEN" | "NOTIFY", ..] => {
            return unsupported(
                w[0],
                "; use SELECT … EMIT CHANGES for changes as they happen",
            )
        }
        ["DECLARE" | "FETCH" | "MOVE", ..] => {
            return unsupported(
                "cursors",
                "; a push query (SELECT … EMIT CHANGES) streams its rows",
            )
        }
        ["PREPARE" | "EXECUTE", ..] => {
            return unsupported(
                "SQL-level PREPARE/EXECUTE",
                "; use the extended query protocol (your driver's prepared statements)",
            )
        }
        ["LOCK" | "VACUUM" | "ANALYZE" | "CLUSTER" | "REINDEX" | "CHECKPOINT" | "GRANT"
        | "REVOKE" | "ALTER" | "COMMENT" | "REFRESH", ..] => return unsupported(w[0], ""),
        ["CREATE" | "DROP", "INDEX" | "UNIQUE" | "SEQUENCE" | "SCHEMA" | "FUNCTION" | "ROLE" | "USER" | "DATABASE"
        | "EXTENSION" | "TYPE" | "TRIGGER" | "DOMAIN" | "RULE" | "POLICY" | "PUBLICATION"
        | "SUBSCRIPTION", ..] => return unsupported(&format!("{} {}", w[0], w[1]), ""),
        ["CREATE", "MATERIALIZED", ..] => {
            return unsupported(
                "CREATE MATERIALIZED VIEW",
                "; CREATE VIEW v AS SELECT … makes a view that is always up to date",
            )
        }
        _ => return Ok(None),
    }))
}

/// The name after `after` (and an optional `SAVEPOINT`) in `sql`: `ROLLBACK TO SAVEPOINT a`,
/// `RELEASE a`, `SAVEPOINT "A b"`, `CLOSE c`. Unquoted names fold to lower case.
fn savepoint_name(sql: &str, after: &str) -> Result<String, PgError> {
    let body = sql.trim().trim_end_matches(';').trim();
    let upper = body.to_ascii_uppercase();
    let at = upper
        .split_whitespace()
        .position(|w| w == after)
        .ok_or_else(|| PgError::Syntax(format!("{body}: expected {after} before a name")))?;
    let mut rest: Vec<&str> = body.split_whitespace().skip(at + 1).collect();
    if rest
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("SAVEPOINT"))
        && after != "SAVEPOINT"
    {
        rest.remove(0);
    }
    let name = rest.join(" ");
    let quoted = name.len() >= 2 && name.starts_with('"') && name.ends_with('"');
    let name = if quoted {
        name[1..name.len() - 1].replace("\"\"", "\"")
    } else if !name.is_empty() && !name.contains(char::is_whitespace) {
        name.to_ascii_lowercase()
    } else {
        return Err(PgError::Syntax(format!("{body}: expected one name")));
    };
    Ok(name)
}

fn is_version(sql: &str) -> bool {
    let compact: String = sql
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ';')
        .collect::<String>()
        .to_ascii_lowercase();
    compact == "selectversion()" || compact == "selectpg_catalog.version()"
}

/// The statement from its first word on, without a trailing `;`: what [`words`] skips
/// before the first word (blanks and opening parentheses) is skipped here too, so byte
/// offsets after the first word are offsets into the word's own text.
fn statement_body(sql: &str) -> &str {
    sql.trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .trim_end()
        .trim_end_matches(';')
        .trim_end()
}

/// `SET [SESSION | LOCAL] name { TO | = } value`, `SET TIME ZONE value`,
/// `SET SESSION CHARACTERISTICS …`, `SET NAMES value`.
fn set(sql: &str) -> Result<Compat, PgError> {
    let body = statement_body(sql);
    let mut rest = body.get(3..).unwrap_or("").trim_start();
    for scope in ["SESSION ", "LOCAL "] {
        if rest
            .get(..scope.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(scope))
        {
            rest = rest[scope.len()..].trim_start();
        }
    }
    let upper = rest.to_ascii_uppercase();
    let (name, value) = if let Some(v) = upper.strip_prefix("TIME ZONE") {
        (
            "timezone".to_string(),
            rest[rest.len() - v.len()..].trim().to_string(),
        )
    } else if upper.starts_with("CHARACTERISTICS") || upper.starts_with("TRANSACTION") {
        return Ok(Compat::Ignored("SET"));
    } else if let Some(v) = upper.strip_prefix("NAMES") {
        (
            "client_encoding".to_string(),
            rest[rest.len() - v.len()..].trim().to_string(),
        )
    } else {
        let split = rest
            .find('=')
            .map(|i| (i, 1))
            .or_else(|| upper.find(" TO ").map(|i| (i, 4)));
        let Some((at, len)) = split else {
            return Err(PgError::Syntax(format!(
                "{body}: expected SET name = value or SET name TO value"
            )));
        };
        (
            rest[..at].trim().trim_matches('"').to_ascii_lowercase(),
            rest[at + len..].trim().to_string(),
        )
    };
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .map(|v| v.replace("''", "'"))
        .unwrap_or(value);
    if name.is_empty() {
        return Err(PgError::Syntax(format!("{body}: expected a setting name")));
    }
    Ok(Compat::Set { name, value })
}

/// A connection's settings: what `SHOW` answers and `SET` changes. Unknown names can be
/// set (drivers set their own) and then shown.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            values: defaults()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// A PostgreSQL time setting in milliseconds: `5000`, `'5s'`, `500ms`, `1min`, `2h`, `1d`
/// (a bare number is milliseconds).
fn parse_duration_ms(value: &str) -> Option<u64> {
    let v = value.trim().trim_matches('\'').trim().to_ascii_lowercase();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1e3,
        "min" => 60e3,
        "h" => 3_600e3,
        "d" => 86_400e3,
        _ => return None,
    };
    let ms = number * scale;
    (ms.is_finite() && (0.0..=i32::MAX as f64).contains(&ms)).then(|| ms.round() as u64)
}

/// A `TimeZone` value as PostgreSQL takes it: an IANA name (`'Europe/Madrid'`,
/// `"Etc/UTC"`, any case), `UTC`/`GMT`/`Z`, `DEFAULT`/`LOCAL` (UTC, the server's zone), or a
/// whole number of hours east of UTC (`-7`, `'+02'`: a fixed offset).
fn parse_time_zone(value: &str) -> Result<chrono_tz::Tz, PgError> {
    let v = value.trim();
    let v = v
        .strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .or_else(|| v.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
        .unwrap_or(v)
        .trim();
    let lower = v.to_ascii_lowercase();
    if ["utc", "gmt", "z", "zulu", "default", "local", "universal"].contains(&lower.as_str()) {
        return Ok(chrono_tz::Tz::UTC);
    }
    let bad = || PgError::State {
        code: "22023",
        message: format!(
            "invalid value for parameter \"TimeZone\": \"{v}\" (give an IANA zone such as \
             'Europe/Madrid', 'UTC', or whole hours east of UTC such as '+02')"
        ),
    };
    if let Ok(hours) = v.parse::<i8>() {
        if !(-14..=14).contains(&hours) {
            return Err(bad());
        }
        // The Etc/GMT zones count hours west of Greenwich: UTC+2 is Etc/GMT-2.
        let name = match hours {
            0 => "Etc/GMT".to_string(),
            h if h > 0 => format!("Etc/GMT-{h}"),
            h => format!("Etc/GMT+{}", -h),
        };
        return name.parse().map_err(|_| bad());
    }
    // PostgreSQL reads zone names in any case.
    chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(v))
        .copied()
        .ok_or_else(bad)
}

fn defaults() -> Vec<(&'static str, &'static str)> {
    vec![
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("datestyle", "ISO, MDY"),
        ("default_transaction_isolation", "read committed"),
        ("default_transaction_read_only", "off"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("is_superuser", "on"),
        ("max_identifier_length", "63"),
        ("search_path", "public"),
        ("session_authorization", "streamcell"),
        ("server_encoding", "UTF8"),
        ("server_version", SERVER_VERSION),
        ("server_version_num", "160006"),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("timezone", "UTC"),
        ("transaction_isolation", "read committed"),
        ("transaction_read_only", "off"),
    ]
}

impl Settings {
    /// Applies `SET name = value`. Settings that define how values are sent cannot change.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), PgError> {
        let fixed = |want: &str| -> Result<(), PgError> {
            if value.eq_ignore_ascii_case(want) || value.replace('-', "").eq_ignore_ascii_case(want)
            {
                Ok(())
            } else {
                Err(PgError::Unsupported(format!(
                    "{name} is always {want} in StreamCell (asked for {value:?})"
                )))
            }
        };
        match name {
            "client_encoding" => fixed("UTF8")?,
            "timezone" => {
                let tz = parse_time_zone(value)?;
                self.values.insert(name.to_string(), tz.name().to_string());
                return Ok(());
            }
            "statement_timeout" => {
                let ms = parse_duration_ms(value).ok_or_else(|| {
                    PgError::BadParameter(format!(
                        "invalid value for parameter \"statement_timeout\": {value:?} (give \
                         milliseconds, or a number with ms, s, min, h or d)"
                    ))
                })?;
                self.values.insert(name.to_string(), ms.to_string());
                return Ok(());
            }
            "server_version"
            | "server_encoding"
            | "integer_datetimes"
            | "server_version_num"
            | "is_superuser"
            | "max_identifier_length"
            | "session_authorization" => {
                return Err(PgError::Unsupported(format!(
                    "parameter {name:?} cannot be changed"
                )))
            }
            _ => {}
        }
        self.values.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// The session's `TimeZone`: `timestamptz` values are sent in it.
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.values
            .get("timezone")
            .and_then(|v| v.parse().ok())
            .unwrap_or(chrono_tz::Tz::UTC)
    }

    /// The session's `statement_timeout` (`None`: no limit, the default `0`).
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        let ms = self
            .values
            .get("statement_timeout")
            .and_then(|v| parse_duration_ms(v))?;
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    /// `RESET name` (`None`: all).
    pub fn reset(&mut self, name: Option<&str>) {
        let d = Settings::default();
        match name {
            None => *self = d,
            Some(n) => match d.values.get(n) {
                Some(v) => {
                    self.values.insert(n.to_string(), v.clone());
                }
                None => {
                    self.values.remove(n);
                }
            },
        }
    }

    /// The value of a setting (names are case-insensitive).
    pub fn get(&self, name: &str) -> Result<String, PgError> {
        self.values
            .get(&name.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| PgError::UnknownSetting(name.to_string()))
    }

    /// Every setting, by name.
    pub fn all(&self) -> impl Iterator<Item = (&String, &String)> {
        self.values.iter()
    }
}

/// `version()`'s answer.
pub fn version() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (StreamCell {}), compatible wire protocol",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sql: &str) -> Option<Compat> {
        classify(sql).unwrap()
    }

    #[test]
    fn session_statements_are_recognised() {
        assert_eq!(
            c("SET search_path TO 'public'"),
            Some(Compat::Set {
                name: "search_path".into(),
                value: "public".into()
            })
        );
        assert_eq!(
            c("set extra_float_digits = 3;"),
            Some(Compat::Set {
                name: "extra_float_digits".into(),
                value: "3".into()
            })
        );
        assert_eq!(
            c("SET TIME ZONE 'UTC'"),
            Some(Compat::Set {
                name: "timezone".into(),
                value: "UTC".into()
            })
        );
        assert_eq!(
            c("SHOW TimeZone"),
            Some(Compat::Show(Some("timezone".into())))
        );
        assert_eq!(c("show streams"), None);
        assert_eq!(c("BEGIN"), Some(Compat::Begin));
        assert_eq!(c("rollback"), Some(Compat::End { rollback: true }));
        assert_eq!(c("SELECT version()"), Some(Compat::Version));
        assert_eq!(c("SELECT * FROM s"), None);
        assert_eq!(c("CREATE STREAM s"), None);
    }

    #[test]
    fn savepoints_cursors_and_show_forms_are_read_as_postgresql_writes_them() {
        assert_eq!(c("SAVEPOINT sa_1"), Some(Compat::Savepoint("sa_1".into())));
        assert_eq!(
            c("savepoint \"A b\";"),
            Some(Compat::Savepoint("A b".into()))
        );
        assert_eq!(
            c("RELEASE SAVEPOINT Sa_1"),
            Some(Compat::Release("sa_1".into()))
        );
        assert_eq!(c("release x"), Some(Compat::Release("x".into())));
        assert_eq!(
            c("ROLLBACK TO SAVEPOINT sa_1"),
            Some(Compat::RollbackTo("sa_1".into()))
        );
        assert_eq!(
            c("rollback work to x"),
            Some(Compat::RollbackTo("x".into()))
        );
        assert_eq!(c("ROLLBACK"), Some(Compat::End { rollback: true }));
        assert_eq!(c("CLOSE ALL"), Some(Compat::Ignored("CLOSE CURSOR ALL")));
        assert_eq!(c("close c1"), Some(Compat::Close("c1".into())));
        assert_eq!(c("UNLISTEN *"), Some(Compat::Ignored("UNLISTEN")));
        assert_eq!(
            c("show transaction isolation level"),
            Some(Compat::Show(Some("transaction_isolation".into())))
        );
        assert_eq!(
            c("SHOW TIME ZONE"),
            Some(Compat::Show(Some("timezone".into())))
        );
        assert!(classify("SAVEPOINT").is_err());
        assert!(classify("RELEASE a b").is_err());
        assert!(Compat::RollbackTo("x".into()).allowed_when_aborted());
        // Multi-byte text where a keyword's length would be sliced (found by review).
        for sql in [
            "SET LOCA\u{20ac} = 1",
            "((\u{3000}SHOW x",
            "(\u{3000}SET x=1",
            "SHOW \u{3000}",
        ] {
            let _ = classify(sql);
        }
        assert_eq!(c("((\u{3000}SHOW x"), Some(Compat::Show(Some("x".into()))));
        assert!(!Compat::Savepoint("x".into()).allowed_when_aborted());
    }

    #[test]
    fn postgres_features_streamcell_lacks_are_0a000() {
        for sql in [
            "COPY s FROM STDIN",
            "UPDATE s SET a = 1",
            "LISTEN x",
            "CREATE INDEX i ON s (a)",
        ] {
            let e = classify(sql).unwrap_err();
            assert_eq!(e.sqlstate(), "0A000", "{sql}");
        }
    }

    #[test]
    fn statement_timeouts_read_as_postgresql_writes_them() {
        let mut s = Settings::default();
        assert_eq!(s.statement_timeout(), None);
        for (v, ms) in [
            ("5000", 5000),
            ("'5s'", 5000),
            ("250ms", 250),
            ("1min", 60_000),
            ("0", 0),
        ] {
            s.set("statement_timeout", v).expect(v);
            assert_eq!(
                s.statement_timeout(),
                (ms > 0).then(|| std::time::Duration::from_millis(ms)),
                "{v}"
            );
        }
        assert!(s.set("statement_timeout", "soon").is_err());
        assert!(s.set("statement_timeout", "-1").is_err());
        assert!(s.set("statement_timeout", "5 parsecs").is_err());
    }

    #[test]
    fn settings_keep_what_is_set_and_refuse_what_cannot_change() {
        let mut s = Settings::default();
        s.set("application_name", "psql").unwrap();
        assert_eq!(s.get("APPLICATION_NAME").unwrap(), "psql");
        assert!(s.set("client_encoding", "LATIN1").is_err());
        s.set("client_encoding", "utf-8").unwrap();
        s.set("timezone", "\"Etc/UTC\"").unwrap();
        assert_eq!(s.time_zone(), chrono_tz::Tz::Etc__UTC);
        s.set("timezone", "'europe/madrid'").unwrap();
        assert_eq!(s.get("TimeZone").unwrap(), "Europe/Madrid");
        s.set("timezone", "+02").unwrap();
        assert_eq!(s.get("timezone").unwrap(), "Etc/GMT-2");
        s.set("timezone", "LOCAL").unwrap();
        assert_eq!(s.time_zone(), chrono_tz::Tz::UTC);
        let e = s.set("timezone", "Mars/Olympus_Mons").unwrap_err();
        assert_eq!(e.sqlstate(), "22023", "{e}");
        assert!(s.set("timezone", "+15").is_err());
        assert!(s.get("no_such_thing").is_err());
        s.reset(None);
        assert_eq!(s.get("application_name").unwrap(), "");
    }
}
