//! Schemas and attribute characteristics (RFC 7643 §2, §4, §7, §8.7.1).
//!
//! The definitions here drive everything else: input normalisation (names are matched
//! case-insensitively and rewritten to their canonical case), type checks, mutability,
//! the `returned` characteristic of projections, caseExact in filters, and the documents
//! served at `/Schemas`.

use std::sync::LazyLock;

use serde_json::{Value, json};

/// URN of the core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// URN of the Enterprise User extension.
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// URN of seatkeeper's read-only licensing extension on User.
pub const LICENSING_USER_SCHEMA: &str =
    "urn:seatkeeper:params:scim:schemas:extension:licensing:2.0:User";
/// URN of the core Group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// URN of list responses.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// URN of PATCH requests.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// URN of search requests.
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// URN of bulk requests.
pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
/// URN of bulk responses.
pub const BULK_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// The data type of an attribute (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// A Unicode string.
    String,
    /// `true` or `false`.
    Boolean,
    /// A real number.
    Decimal,
    /// A whole number.
    Integer,
    /// An xsd:dateTime string.
    DateTime,
    /// A URI reference.
    Reference,
    /// Base64-encoded bytes.
    Binary,
    /// An object with sub-attributes.
    Complex,
}

impl AttrType {
    /// The name used in schema documents.
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Reference => "reference",
            AttrType::Binary => "binary",
            AttrType::Complex => "complex",
        }
    }
}

/// When an attribute may be written (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Never written by clients; ignored on input.
    ReadOnly,
    /// Written freely.
    ReadWrite,
    /// Written once, then never changed.
    Immutable,
    /// Written, never returned.
    WriteOnly,
}

/// When an attribute is returned (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Always returned, even when excluded.
    Always,
    /// Never returned.
    Never,
    /// Returned unless excluded, or unless `attributes` names others.
    Default,
    /// Returned only when named in `attributes`.
    Request,
}

/// The scope of uniqueness of an attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    /// No constraint.
    None,
    /// Unique within the service provider (here: within one tenant).
    Server,
    /// Unique globally.
    Global,
}

/// One attribute definition, with its characteristics.
#[derive(Debug, Clone)]
pub struct AttributeDef {
    /// Canonical name (case-preserved).
    pub name: &'static str,
    /// Data type.
    pub ty: AttrType,
    /// Whether the attribute holds a list.
    pub multi_valued: bool,
    /// Whether a value is required on create and replace.
    pub required: bool,
    /// Whether string comparisons are case-sensitive.
    pub case_exact: bool,
    /// Mutability characteristic.
    pub mutability: Mutability,
    /// Returned characteristic.
    pub returned: Returned,
    /// Uniqueness characteristic.
    pub uniqueness: Uniqueness,
    /// Suggested values (not enforced, per RFC 7643 §2.3.1 "canonicalValues").
    pub canonical_values: &'static [&'static str],
    /// Resource types a reference may point to.
    pub reference_types: &'static [&'static str],
    /// Sub-attributes of a complex attribute.
    pub sub_attributes: Vec<AttributeDef>,
    /// Human-readable description.
    pub description: &'static str,
}

impl AttributeDef {
    fn new(name: &'static str, ty: AttrType) -> Self {
        AttributeDef {
            name,
            ty,
            multi_valued: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: &[],
            reference_types: &[],
            sub_attributes: Vec::new(),
            description: "",
        }
    }
    fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    fn mutability(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }
    fn returned(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }
    fn unique(mut self, u: Uniqueness) -> Self {
        self.uniqueness = u;
        self
    }
    fn canonical(mut self, v: &'static [&'static str]) -> Self {
        self.canonical_values = v;
        self
    }
    fn refs(mut self, v: &'static [&'static str]) -> Self {
        self.reference_types = v;
        self
    }
    fn subs(mut self, v: Vec<AttributeDef>) -> Self {
        self.sub_attributes = v;
        self
    }
    fn describe(mut self, d: &'static str) -> Self {
        self.description = d;
        self
    }

    /// Finds a sub-attribute by name, case-insensitively (RFC 7643 §2.1).
    pub fn sub(&self, name: &str) -> Option<&AttributeDef> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The attribute as a schema document fragment (RFC 7643 §7).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "type": self.ty.as_str(),
            "multiValued": self.multi_valued,
            "description": self.description,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": match self.mutability {
                Mutability::ReadOnly => "readOnly",
                Mutability::ReadWrite => "readWrite",
                Mutability::Immutable => "immutable",
                Mutability::WriteOnly => "writeOnly",
            },
            "returned": match self.returned {
                Returned::Always => "always",
                Returned::Never => "never",
                Returned::Default => "default",
                Returned::Request => "request",
            },
            "uniqueness": match self.uniqueness {
                Uniqueness::None => "none",
                Uniqueness::Server => "server",
                Uniqueness::Global => "global",
            },
        });
        if !self.canonical_values.is_empty() {
            v["canonicalValues"] = json!(self.canonical_values);
        }
        if !self.reference_types.is_empty() {
            v["referenceTypes"] = json!(self.reference_types);
        }
        if !self.sub_attributes.is_empty() {
            v["subAttributes"] =
                Value::Array(self.sub_attributes.iter().map(|a| a.to_json()).collect());
        }
        v
    }
}

/// A schema: a URN and its attributes.
#[derive(Debug, Clone)]
pub struct Schema {
    /// The schema URN.
    pub id: &'static str,
    /// Short name.
    pub name: &'static str,
    /// Human-readable description.
    pub description: &'static str,
    /// Top-level attributes (common attributes `id`, `externalId`, `meta` are not listed here).
    pub attributes: Vec<AttributeDef>,
}

impl Schema {
    /// Finds a top-level attribute by name, case-insensitively.
    pub fn attr(&self, name: &str) -> Option<&AttributeDef> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The schema document served at `/Schemas/{id}`.
    pub fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(|a| a.to_json()).collect::<Vec<_>>(),
            "meta": {
                "resourceType": "Schema",
                "location": format!("{base_url}/Schemas/{}", self.id),
            }
        })
    }
}

/// A resource type: its core schema and its extensions (RFC 7643 §6).
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// Name, e.g. `User`.
    pub name: &'static str,
    /// Endpoint relative to the base URL, e.g. `/Users`.
    pub endpoint: &'static str,
    /// Human-readable description.
    pub description: &'static str,
    /// The core schema.
    pub schema: &'static Schema,
    /// Extension schemas and whether each is required.
    pub extensions: Vec<(&'static Schema, bool)>,
}

/// Where an attribute lives: in the core schema or in an extension (by URN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A top-level attribute of the core schema (or a common attribute).
    Core,
    /// An attribute of the extension with this URN, stored under the URN key.
    Extension(&'static str),
}

impl ResourceType {
    /// The resource type document served at `/ResourceTypes/{name}`.
    pub fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.schema.id,
            "schemaExtensions": self.extensions.iter().map(|(s, required)| json!({
                "schema": s.id, "required": required
            })).collect::<Vec<_>>(),
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{base_url}/ResourceTypes/{}", self.name),
            }
        })
    }

    /// All schema URNs this resource type may carry.
    pub fn schema_urns(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.schema.id).chain(self.extensions.iter().map(|(s, _)| s.id))
    }

    /// Finds an extension schema by URN, case-insensitively.
    pub fn extension(&self, urn: &str) -> Option<&'static Schema> {
        self.extensions
            .iter()
            .map(|(s, _)| *s)
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Resolves an attribute name, optionally URN-qualified, to its definition and location.
    ///
    /// Unqualified names are looked up in the common attributes, then the core schema, then
    /// the extensions: Entra ID and Okta send unqualified extension names in some filters.
    pub fn resolve(
        &self,
        urn: Option<&str>,
        name: &str,
    ) -> Option<(&'static AttributeDef, Location)> {
        match urn {
            Some(urn) if urn.eq_ignore_ascii_case(self.schema.id) => self.resolve_core(name),
            Some(urn) => {
                let ext = self.extension(urn)?;
                ext.attr(name).map(|a| (a, Location::Extension(ext.id)))
            }
            None => self.resolve_core(name).or_else(|| {
                self.extensions
                    .iter()
                    .find_map(|(s, _)| s.attr(name).map(|a| (a, Location::Extension(s.id))))
            }),
        }
    }

    fn resolve_core(&self, name: &str) -> Option<(&'static AttributeDef, Location)> {
        COMMON
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .or_else(|| self.schema.attr(name))
            .map(|a| (a, Location::Core))
    }
}

use AttrType::*;
use Mutability::*;
use Returned::*;

fn multi_complex(
    name: &'static str,
    description: &'static str,
    types: &'static [&'static str],
    value_ty: AttrType,
) -> AttributeDef {
    AttributeDef::new(name, Complex)
        .multi()
        .describe(description)
        .subs(vec![
            AttributeDef::new("value", value_ty).describe("The value."),
            AttributeDef::new("display", String)
                .describe("A human-readable name, primarily used for display purposes."),
            AttributeDef::new("type", String)
                .canonical(types)
                .describe("A label indicating the attribute's function."),
            AttributeDef::new("primary", Boolean).describe("Whether this is the primary value."),
        ])
}

/// The common attributes of every resource (RFC 7643 §3.1): `id`, `externalId`, `meta`.
pub static COMMON: LazyLock<Vec<AttributeDef>> = LazyLock::new(|| {
    vec![
        AttributeDef::new("id", String)
            .case_exact()
            .mutability(ReadOnly)
            .returned(Always)
            .unique(Uniqueness::Server)
            .describe("Unique identifier for the resource, assigned by the service provider."),
        AttributeDef::new("externalId", String)
            .case_exact()
            .describe("An identifier for the resource as defined by the provisioning client."),
        AttributeDef::new("meta", Complex)
            .mutability(ReadOnly)
            .describe("Resource metadata.")
            .subs(vec![
                AttributeDef::new("resourceType", String)
                    .case_exact()
                    .mutability(ReadOnly),
                AttributeDef::new("created", DateTime).mutability(ReadOnly),
                AttributeDef::new("lastModified", DateTime).mutability(ReadOnly),
                AttributeDef::new("location", Reference)
                    .case_exact()
                    .mutability(ReadOnly),
                AttributeDef::new("version", String)
                    .case_exact()
                    .mutability(ReadOnly),
            ]),
    ]
});

/// The core User schema (RFC 7643 §4.1).
pub static USER: LazyLock<Schema> = LazyLock::new(|| {
    Schema {
    id: USER_SCHEMA,
    name: "User",
    description: "User Account",
    attributes: vec![
        AttributeDef::new("userName", String)
            .required()
            .unique(Uniqueness::Server)
            .describe("Unique identifier for the User, typically used to sign in. Unique per tenant, compared case-insensitively."),
        AttributeDef::new("name", Complex).describe("The components of the user's real name.").subs(vec![
            AttributeDef::new("formatted", String).describe("The full name."),
            AttributeDef::new("familyName", String).describe("The family name."),
            AttributeDef::new("givenName", String).describe("The given name."),
            AttributeDef::new("middleName", String).describe("The middle name(s)."),
            AttributeDef::new("honorificPrefix", String).describe("The honorific prefix(es)."),
            AttributeDef::new("honorificSuffix", String).describe("The honorific suffix(es)."),
        ]),
        AttributeDef::new("displayName", String).describe("The name of the User, suitable for display."),
        AttributeDef::new("nickName", String).describe("The casual way to address the user."),
        AttributeDef::new("profileUrl", Reference).refs(&["external"]).describe("A URI of the user's online profile."),
        AttributeDef::new("title", String).describe("The user's title, such as \"Vice President\"."),
        AttributeDef::new("userType", String).describe("The relationship between the organization and the user."),
        AttributeDef::new("preferredLanguage", String).describe("The user's preferred written or spoken language."),
        AttributeDef::new("locale", String).describe("The user's default location for localisation."),
        AttributeDef::new("timezone", String).describe("The user's time zone in IANA format."),
        AttributeDef::new("active", Boolean).describe("Whether the user may use the service. Setting it false deprovisions the user."),
        AttributeDef::new("password", String)
            .mutability(WriteOnly)
            .returned(Never)
            .describe("Accepted for compatibility; never stored in clear and never returned."),
        multi_complex("emails", "Email addresses for the user.", &["work", "home", "other"], String),
        multi_complex("phoneNumbers", "Phone numbers for the user.", &["work", "home", "mobile", "fax", "pager", "other"], String),
        multi_complex("ims", "Instant messaging addresses for the user.", &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"], String),
        multi_complex("photos", "URLs of photos of the user.", &["photo", "thumbnail"], Reference),
        AttributeDef::new("addresses", Complex).multi().describe("A physical mailing address for this user.").subs(vec![
            AttributeDef::new("formatted", String),
            AttributeDef::new("streetAddress", String),
            AttributeDef::new("locality", String),
            AttributeDef::new("region", String),
            AttributeDef::new("postalCode", String),
            AttributeDef::new("country", String),
            AttributeDef::new("type", String).canonical(&["work", "home", "other"]),
            AttributeDef::new("primary", Boolean),
        ]),
        AttributeDef::new("groups", Complex)
            .multi()
            .mutability(ReadOnly)
            .describe("The groups the user belongs to, directly or through nested groups. Changed through the Group resource.")
            .subs(vec![
                AttributeDef::new("value", String).mutability(ReadOnly).describe("The id of the group."),
                AttributeDef::new("$ref", Reference).refs(&["Group"]).mutability(ReadOnly),
                AttributeDef::new("display", String).mutability(ReadOnly),
                AttributeDef::new("type", String).canonical(&["direct", "indirect"]).mutability(ReadOnly),
            ]),
        multi_complex("entitlements", "A list of entitlements for the user.", &[], String),
        multi_complex("roles", "A list of roles for the user.", &[], String),
        multi_complex("x509Certificates", "A list of certificates issued to the user.", &[], Binary),
    ],
}
});

/// The Enterprise User extension (RFC 7643 §4.3).
pub static ENTERPRISE_USER: LazyLock<Schema> = LazyLock::new(|| Schema {
    id: ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: vec![
        AttributeDef::new("employeeNumber", String)
            .describe("Numeric or alphanumeric identifier assigned to a person."),
        AttributeDef::new("costCenter", String).describe("Identifies the name of a cost center."),
        AttributeDef::new("organization", String)
            .describe("Identifies the name of an organization."),
        AttributeDef::new("division", String).describe("Identifies the name of a division."),
        AttributeDef::new("department", String).describe("Identifies the name of a department."),
        AttributeDef::new("manager", Complex)
            .describe("The user's manager. Entra ID may send the manager's id as a plain string.")
            .subs(vec![
                AttributeDef::new("value", String).describe("The id of the manager's User."),
                AttributeDef::new("$ref", Reference).refs(&["User"]),
                AttributeDef::new("displayName", String).mutability(ReadOnly),
            ]),
    ],
});

/// seatkeeper's licensing extension on User: the licenses a user holds and what they grant.
/// Every attribute is read-only: licenses follow the directory and the licensing model, and
/// clients can read and filter them (`…:licenses.state eq "waitlisted"`) but never write them.
pub static LICENSING_USER: LazyLock<Schema> = LazyLock::new(|| Schema {
    id: LICENSING_USER_SCHEMA,
    name: "LicensingUser",
    description: "Licenses and entitlements seatkeeper decided for the user",
    attributes: vec![
        AttributeDef::new("licenses", Complex)
            .multi()
            .mutability(ReadOnly)
            .describe("One license per product the user should hold.")
            .subs(vec![
                AttributeDef::new("product", String)
                    .case_exact()
                    .mutability(ReadOnly)
                    .describe("The product's key."),
                AttributeDef::new("plan", String)
                    .case_exact()
                    .mutability(ReadOnly)
                    .describe("The plan's key."),
                AttributeDef::new("state", String)
                    .case_exact()
                    .canonical(&["active", "waitlisted"])
                    .mutability(ReadOnly)
                    .describe("active: holds a seat; waitlisted: waits for one."),
                AttributeDef::new("reason", String)
                    .mutability(ReadOnly)
                    .describe("Why the license is in its state."),
                AttributeDef::new("since", DateTime)
                    .mutability(ReadOnly)
                    .describe("When the license entered its state."),
            ]),
        AttributeDef::new("features", String)
            .multi()
            .case_exact()
            .mutability(ReadOnly)
            .describe("Features the user's active licenses grant."),
        AttributeDef::new("limits", Complex)
            .multi()
            .mutability(ReadOnly)
            .describe("Limits the user's active licenses grant (the largest per name).")
            .subs(vec![
                AttributeDef::new("name", String)
                    .case_exact()
                    .mutability(ReadOnly),
                AttributeDef::new("value", Integer).mutability(ReadOnly),
            ]),
    ],
});

/// The core Group schema (RFC 7643 §4.2).
pub static GROUP: LazyLock<Schema> = LazyLock::new(|| {
    Schema {
    id: GROUP_SCHEMA,
    name: "Group",
    description: "Group",
    attributes: vec![
        AttributeDef::new("displayName", String)
            .required()
            .unique(Uniqueness::Server)
            .describe("A human-readable name for the Group. Unique per tenant, compared case-insensitively."),
        AttributeDef::new("members", Complex)
            .multi()
            .describe("Users and groups that belong to the group.")
            .subs(vec![
                AttributeDef::new("value", String).case_exact().mutability(Immutable).describe("The id of the member User or Group."),
                AttributeDef::new("$ref", Reference).refs(&["User", "Group"]).mutability(Immutable),
                AttributeDef::new("type", String).canonical(&["User", "Group"]).mutability(Immutable),
            ]),
    ],
}
});

/// The User resource type: core User plus the Enterprise and licensing extensions.
pub static USER_TYPE: LazyLock<ResourceType> = LazyLock::new(|| ResourceType {
    name: "User",
    endpoint: "/Users",
    description: "User Account",
    schema: &USER,
    extensions: vec![(&*ENTERPRISE_USER, false), (&*LICENSING_USER, false)],
});

/// The Group resource type.
pub static GROUP_TYPE: LazyLock<ResourceType> = LazyLock::new(|| ResourceType {
    name: "Group",
    endpoint: "/Groups",
    description: "Group",
    schema: &GROUP,
    extensions: vec![],
});

/// Every schema this crate defines, as served at `/Schemas`.
pub fn all_schemas() -> [&'static Schema; 4] {
    [&USER, &ENTERPRISE_USER, &LICENSING_USER, &GROUP]
}
