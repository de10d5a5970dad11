//! The policy document exactly as written: the serde shape of the JSON file.
//!
//! Kept separate from the validated model so the canonical form
//! ([`crate::Policy::to_json_pretty`]) is the admin's own text with sorted keys
//! and explicit defaults, not a re-rendering that could drift from what they
//! wrote. Every struct refuses unknown fields, every map refuses duplicate
//! keys, and structs must be JSON objects (serde would otherwise also take a
//! positional array): a typo must not silently change or drop a rule.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The whole policy file. Every key is optional; the empty document denies everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyDoc {
    /// `group:NAME` -> member users.
    #[serde(default, deserialize_with = "unique_map")]
    pub groups: BTreeMap<String, Vec<String>>,
    /// `tag:NAME` -> users and groups allowed to put the tag on their nodes.
    #[serde(default, deserialize_with = "unique_map")]
    pub tag_owners: BTreeMap<String, Vec<String>>,
    /// Alias -> IP address or CIDR.
    #[serde(default, deserialize_with = "unique_map")]
    pub hosts: BTreeMap<String, String>,
    /// Accept rules.
    #[serde(default, deserialize_with = "object_list")]
    pub acls: Vec<AclDoc>,
    /// Who may use which exit nodes.
    #[serde(default, deserialize_with = "object_list")]
    pub exit_nodes: Vec<ExitDoc>,
    /// Which nodes may have which advertised routes approved.
    #[serde(default, deserialize_with = "object_list")]
    pub route_approvers: Vec<ApproverDoc>,
    /// Magic DNS settings. Left out of the canonical form while empty, so
    /// policies that never mention DNS keep their text.
    #[serde(
        default,
        deserialize_with = "object",
        skip_serializing_if = "DnsDoc::is_empty"
    )]
    pub dns: DnsDoc,
}

/// The `dns` section as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DnsDoc {
    /// Split DNS: domain -> resolver addresses that answer names under it.
    #[serde(default, deserialize_with = "unique_map")]
    pub split: BTreeMap<String, Vec<String>>,
}

impl DnsDoc {
    fn is_empty(&self) -> bool {
        self.split.is_empty()
    }
}

/// One ACL rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AclDoc {
    /// Must be `accept`.
    pub action: String,
    /// Source selectors.
    pub src: Vec<String>,
    /// `SELECTOR:PORTS` entries.
    pub dst: Vec<String>,
    /// `tcp`, `udp`, `icmp` or `any`.
    #[serde(default = "default_proto")]
    pub proto: String,
}

/// One `exit_nodes` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExitDoc {
    /// Users, groups or `*` allowed to use the exits.
    pub users: Vec<String>,
    /// The exit nodes they may use.
    pub nodes: Vec<String>,
}

/// One `route_approvers` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproverDoc {
    /// Prefixes whose sub-prefixes may be approved.
    pub routes: Vec<String>,
    /// Nodes whose advertisements are approved.
    pub nodes: Vec<String>,
}

fn default_proto() -> String {
    "any".to_owned()
}

/// Deserializes a JSON object into a map, refusing a key that appears twice
/// (serde's default keeps the last one silently).
fn unique_map<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueMap<V>(PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueMap<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = access.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(A::Error::custom(format!("duplicate key {key:?}")));
                }
                let value = access.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(UniqueMap(PhantomData))
}

/// A `T` that must be written as a JSON object.
pub(crate) struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(access))
            }
        }

        deserializer
            .deserialize_map(ObjectOnly(PhantomData))
            .map(Obj)
    }
}

/// A struct that must be written as a JSON object.
fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Obj::<T>::deserialize(deserializer).map(|o| o.0)
}

/// A list whose elements must each be a JSON object.
fn object_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Vec::<Obj<T>>::deserialize(deserializer)?;
    Ok(list.into_iter().map(|o| o.0).collect())
}
