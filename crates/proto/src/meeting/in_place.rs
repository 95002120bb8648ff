//! Serde plumbing for the data types: [`read_in_place!`] reads a struct's known fields in place
//! and keeps every other key in its `unknown` map.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// Reads a map key as one of `.0` (no allocation), or as an owned unknown key.
pub(super) struct FieldKey(pub(super) &'static [&'static str]);

impl<'de> de::DeserializeSeed<'de> for FieldKey {
    type Value = Result<&'static str, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldKey {
    type Value = Result<&'static str, String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self
            .0
            .iter()
            .find(|k| **k == s)
            .copied()
            .ok_or_else(|| s.to_string()))
    }
}

/// Implements `Deserialize` for a struct with an `unknown` map: known keys are read in place,
/// every other key is kept in `unknown`. This is what `#[serde(flatten)]` does, without
/// buffering the whole object first (a `complete` can carry megabytes of transcript).
/// - `required`: must be present;
/// - `plain`: optional, `null` reads as absent (`Option` → `None`, `Vec` must not be null);
/// - `present`: optional, `null` is kept apart from absence (`Nullable<T>`, `Option<Value>`).
macro_rules! read_in_place {
    ($ty:ident, required: [$($req:ident),*], plain: [$($plain:ident),*], present: [$($pres:ident),*]) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct V;
                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str(concat!("an object (", stringify!($ty), ")"))
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        const FIELDS: &[&str] =
                            &[$(stringify!($req),)* $(stringify!($plain),)* $(stringify!($pres),)*];
                        $(let mut $req = None;)*
                        $(let mut $plain = Default::default();)*
                        $(let mut $pres = None;)*
                        let mut unknown = ::serde_json::Map::new();
                        while let Some(key) = map.next_key_seed($crate::meeting::in_place::FieldKey(FIELDS))? {
                            match key {
                                $(Ok(stringify!($req)) => $req = Some(map.next_value()?),)*
                                $(Ok(stringify!($plain)) => $plain = map.next_value()?,)*
                                $(Ok(stringify!($pres)) => $pres = Some(map.next_value()?),)*
                                Ok(other) => return Err(::serde::de::Error::unknown_field(other, FIELDS)),
                                Err(key) => {
                                    let v = map.next_value::<::serde_json::Value>()?;
                                    unknown.insert(key, v);
                                }
                            }
                        }
                        Ok($ty {
                            $($req: $req.ok_or_else(|| ::serde::de::Error::missing_field(stringify!($req)))?,)*
                            $($plain,)*
                            $($pres,)*
                            unknown,
                        })
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

pub(super) use read_in_place;
