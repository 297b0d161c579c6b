//! OpenAPI schemas (feature `openapi`) for the types whose schema the derive cannot say: the
//! typed ids (strings with a pattern) and the enums whose `Unknown` variant is for clients
//! only (a broker never sends it, so the document does not list it).

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::api::{ErrorCode, EventType};
use crate::ids::{BuildId, GameId, HostId, PoolId, SessionId, MAX_ID_LEN};

/// The pattern every id matches (see [`crate::ids`]).
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$";

fn id_schema(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(MAX_ID_LEN))
        .pattern(Some(ID_PATTERN))
        .into()
}

fn names_schema<'a>(description: &str, names: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(names))
        .into()
}

macro_rules! schema {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

schema!(
    SessionId,
    "SessionId",
    id_schema("A session, made by the broker; opaque.")
);
schema!(
    HostId,
    "HostId",
    id_schema("A runtime host, as its agent names itself.")
);
schema!(
    GameId,
    "GameId",
    id_schema("A game, as named in the agents' catalogs.")
);
schema!(
    PoolId,
    "PoolId",
    id_schema("A warm pool, named by the operator who made it.")
);
schema!(
    BuildId,
    "BuildId",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "A build: the sha256 of its bytes, 64 lowercase hex digits."
        ))
        .min_length(Some(64))
        .max_length(Some(64))
        .pattern(Some("^[0-9a-f]{64}$"))
        .into()
);
schema!(
    ErrorCode,
    "ErrorCode",
    names_schema(
        "What went wrong; API.md's error table gives each code's status.",
        ErrorCode::ALL.map(ErrorCode::as_str)
    )
);
schema!(
    EventType,
    "EventType",
    names_schema(
        "The type of an event (its `event:` line).",
        EventType::ALL.map(EventType::as_str)
    )
);
