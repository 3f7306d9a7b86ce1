//! Identifiers, business time and country codes: the validated value types every command and event is built from.
//!
//! Constructors validate and there are no setters, so a value of one of these types is always well formed.
//! Parsing is strict on purpose: WIRE.md fixes ids to the lowercase hyphenated UUID form, so anything else
//! (uppercase, braces, the nil UUID) is rejected at the edge as `invalid` rather than silently normalised.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why text is not a valid id, time, country or program id. The messages name the offending text (shortened).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ParseError {
    #[error("`{0}` is not a lowercase hyphenated UUID")]
    NotLowercaseUuid(String),
    #[error("`{0}` is not a UUID: {1}")]
    NotUuid(String, String),
    #[error("the nil UUID is not a valid id")]
    NilUuid,
    #[error("`{0}` is not an RFC 3339 time: {1}")]
    NotRfc3339(String, String),
    #[error("`{0}` is not an ISO 3166-1 alpha-2 country code")]
    NotCountry(String),
    #[error("partner_id `{0}` must be a string of 1 to 20 digits")]
    NotProgramId(String),
}

/// Parses the one accepted spelling of an id: 36 characters, lowercase hex, hyphenated, not nil.
pub fn parse_uuid(s: &str) -> Result<Uuid, ParseError> {
    let ok_shape = s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if !ok_shape {
        return Err(ParseError::NotLowercaseUuid(truncate_for_message(s)));
    }
    let id = Uuid::parse_str(s).map_err(|e| ParseError::NotUuid(s.to_string(), e.to_string()))?;
    if id.is_nil() {
        return Err(ParseError::NilUuid);
    }
    Ok(id)
}

/// The pattern of [`parse_uuid`]'s one accepted spelling, minus the nil UUID.
pub const UUID_PATTERN: &str =
    "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

fn uuid_schema() -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "uuid", "pattern": UUID_PATTERN})
}

/// Keeps error messages short when a hostile client sends a megabyte where an id belongs.
pub fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an already validated UUID; the nil UUID is rejected.
            pub fn new(id: Uuid) -> Result<Self, ParseError> {
                if id.is_nil() {
                    Err(ParseError::NilUuid)
                } else {
                    Ok(Self(id))
                }
            }
            /// The underlying UUID.
            pub fn uuid(&self) -> Uuid {
                self.0
            }
            /// The 16 raw bytes, used for index keys.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                parse_uuid(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        /// A lowercase hyphenated UUID, not nil (the only spelling accepted).
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                uuid_schema()
            }
        }

        /// The hyphenated text in JSON; the 16 raw bytes in binary formats (write-model snapshots).
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(&self.0.hyphenated())
                } else {
                    self.0.as_bytes().serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    s.parse().map_err(de::Error::custom)
                } else {
                    let bytes = <[u8; 16]>::deserialize(d)?;
                    Self::new(Uuid::from_bytes(bytes)).map_err(de::Error::custom)
                }
            }
        }
    };
}

uuid_id!(
    /// A directory tenant, as it appears in an actor: it may be a partner's or a customer's.
    TenantId
);
uuid_id!(
    /// The tenant id of an enrolled CSP partner.
    PartnerId
);
uuid_id!(
    /// The tenant id of a customer; the only key of a customer (never its domain).
    CustomerId
);
uuid_id!(
    /// A reseller relationship request (invitation).
    RequestId
);
uuid_id!(
    /// A GDAP admin relationship.
    AdminRelationshipId
);
uuid_id!(
    /// A licence subscription or an Azure subscription.
    SubscriptionId
);
uuid_id!(
    /// A directory role template id.
    RoleId
);
uuid_id!(
    /// The idempotency key of a command.
    CommandId
);
uuid_id!(
    /// Ties together the events of one business operation across commands.
    CorrelationId
);
uuid_id!(
    /// The unique id of one stored event.
    EventId
);

impl PartnerId {
    /// The same tenant seen as an actor tenant.
    pub fn tenant(self) -> TenantId {
        TenantId(self.0)
    }
}

impl CustomerId {
    /// The same tenant seen as an actor tenant.
    pub fn tenant(self) -> TenantId {
        TenantId(self.0)
    }
}

impl TenantId {
    /// This tenant read as a partner id (for lookups; says nothing about enrolment).
    pub fn as_partner(self) -> PartnerId {
        PartnerId(self.0)
    }
    /// This tenant read as a customer id (for lookups; says nothing about registration).
    pub fn as_customer(self) -> CustomerId {
        CustomerId(self.0)
    }
}

/// A business or recorded instant, always UTC, printed as RFC 3339 with `Z`.
///
/// The printed form is canonical (the shortest of 0, 3, 6 or 9 fractional digits that is exact), which matters
/// because the hash chain covers the printed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Wraps a chrono UTC time.
    pub fn from_datetime(t: DateTime<Utc>) -> Self {
        Self(t)
    }
    /// The chrono value.
    pub fn datetime(&self) -> DateTime<Utc> {
        self.0
    }
    /// A UTC calendar instant; panics only on an impossible date, so it is meant for constants and tests.
    pub fn ymd_hms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Self {
        Self(
            Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .expect("a valid calendar date"),
        )
    }
    /// This instant plus whole days of 24 hours.
    pub fn plus_days(&self, days: i64) -> Self {
        Self(self.0 + chrono::Duration::days(days))
    }
    /// This instant plus seconds.
    pub fn plus_seconds(&self, seconds: i64) -> Self {
        Self(self.0 + chrono::Duration::seconds(seconds))
    }
    /// This instant plus minutes.
    pub fn plus_minutes(&self, minutes: i64) -> Self {
        Self(self.0 + chrono::Duration::minutes(minutes))
    }
}

impl FromStr for Timestamp {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self(t.with_timezone(&Utc)))
            .map_err(|e| ParseError::NotRfc3339(truncate_for_message(s), e.to_string()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An RFC 3339 date-time (any offset on input; printed in UTC with `Z`).
impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "date-time"})
    }
}

/// RFC 3339 text in JSON; seconds and nanoseconds since the Unix epoch in binary formats (write-model snapshots).
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            (self.0.timestamp(), self.0.timestamp_subsec_nanos()).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(de::Error::custom)
        } else {
            let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
            DateTime::from_timestamp(secs, nanos)
                .map(Self)
                .ok_or_else(|| de::Error::custom("a time out of range"))
        }
    }
}

/// An ISO 3166-1 alpha-2 country code (officially assigned codes only).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// The two-letter code.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for Country {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let b = s.as_bytes();
        if b.len() == 2 && super::country::is_assigned(s) {
            Ok(Self([b[0], b[1]]))
        } else {
            Err(ParseError::NotCountry(truncate_for_message(s)))
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the assigned ISO 3166-1 alpha-2 codes.
impl schemars::JsonSchema for Country {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Country".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "enum": super::country::assigned()})
    }
}

impl Serialize for Country {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A partner's numeric program id (formerly the MPN id), carried as a string of 1–20 digits.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(transparent)]
pub struct ProgramId(String);

impl FromStr for ProgramId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_string()))
        } else {
            Err(ParseError::NotProgramId(truncate_for_message(s)))
        }
    }
}

impl ProgramId {
    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A string of 1 to 20 digits.
impl schemars::JsonSchema for ProgramId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProgramId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^[0-9]{1,20}$"})
    }
}

impl<'de> Deserialize<'de> for ProgramId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A gapless position in the event log; the first event is 1 and 0 means "before everything".
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Debug,
    Serialize,
    Deserialize,
    Default,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// The position after this one.
    pub fn next(self) -> Position {
        Position(self.0 + 1)
    }
    /// Big-endian bytes, so that sled's byte order is log order.
    pub fn to_key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
    /// Reads a big-endian key back.
    pub fn from_key(key: &[u8]) -> Option<Position> {
        let bytes: [u8; 8] = key.try_into().ok()?;
        Some(Position(u64::from_be_bytes(bytes)))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_only_the_lowercase_hyphenated_non_nil_form() {
        assert!("6f1c2b8e-3d4a-4c5b-9e7f-0a1b2c3d4e5f"
            .parse::<PartnerId>()
            .is_ok());
        for bad in [
            "6F1C2B8E-3D4A-4C5B-9E7F-0A1B2C3D4E5F",
            "6f1c2b8e3d4a4c5b9e7f0a1b2c3d4e5f",
            "{6f1c2b8e-3d4a-4c5b-9e7f-0a1b2c3d4e5f}",
            "00000000-0000-0000-0000-000000000000",
            "",
            "contoso.onmicrosoft.com",
        ] {
            assert!(bad.parse::<PartnerId>().is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn timestamps_normalise_offsets_to_utc_and_print_canonically() {
        let t: Timestamp = "2024-03-01T10:00:00+02:00".parse().unwrap();
        assert_eq!(t.to_string(), "2024-03-01T08:00:00Z");
        let t: Timestamp = "2024-03-01T08:00:00.250Z".parse().unwrap();
        assert_eq!(t.to_string(), "2024-03-01T08:00:00.250Z");
        assert!("2024-03-01 08:00:00".parse::<Timestamp>().is_err());
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    #[test]
    fn countries_must_be_assigned_alpha_2_codes() {
        assert!("NL".parse::<Country>().is_ok());
        assert!("US".parse::<Country>().is_ok());
        for bad in ["nl", "XX", "NLD", "", "ZZ"] {
            assert!(bad.parse::<Country>().is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn program_ids_are_digit_strings() {
        assert!("1234567".parse::<ProgramId>().is_ok());
        assert!("12a4".parse::<ProgramId>().is_err());
        assert!("".parse::<ProgramId>().is_err());
    }
}
