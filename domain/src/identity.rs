//! Staff roles, the permission matrix, and the parse-once newtypes of identity input.

use std::fmt;

/// A staff role. Roles only grant permissions; checks are always made on permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Owner,
    Admin,
    Operator,
    Warehouse,
    CsAgent,
    Finance,
}

/// What a principal may do. Every GraphQL field and mutation requires one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    TenantRead,
    StaffRead,
    StaffManage,
    ApiKeyManage,
    AuditRead,
    PiiRead,
    EventsManage,
    CatalogRead,
    CatalogWrite,
    InventoryRead,
    InventoryWrite,
    OrderRead,
    OrderWrite,
    FulfillmentWrite,
    CsRead,
    CsWrite,
    FinanceRead,
    FinanceWrite,
    ChannelManage,
}

impl Permission {
    pub const ALL: [Permission; 19] = [
        Permission::TenantRead,
        Permission::StaffRead,
        Permission::StaffManage,
        Permission::ApiKeyManage,
        Permission::AuditRead,
        Permission::PiiRead,
        Permission::EventsManage,
        Permission::CatalogRead,
        Permission::CatalogWrite,
        Permission::InventoryRead,
        Permission::InventoryWrite,
        Permission::OrderRead,
        Permission::OrderWrite,
        Permission::FulfillmentWrite,
        Permission::CsRead,
        Permission::CsWrite,
        Permission::FinanceRead,
        Permission::FinanceWrite,
        Permission::ChannelManage,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::TenantRead => "TENANT_READ",
            Permission::StaffRead => "STAFF_READ",
            Permission::StaffManage => "STAFF_MANAGE",
            Permission::ApiKeyManage => "API_KEY_MANAGE",
            Permission::AuditRead => "AUDIT_READ",
            Permission::PiiRead => "PII_READ",
            Permission::EventsManage => "EVENTS_MANAGE",
            Permission::CatalogRead => "CATALOG_READ",
            Permission::CatalogWrite => "CATALOG_WRITE",
            Permission::InventoryRead => "INVENTORY_READ",
            Permission::InventoryWrite => "INVENTORY_WRITE",
            Permission::OrderRead => "ORDER_READ",
            Permission::OrderWrite => "ORDER_WRITE",
            Permission::FulfillmentWrite => "FULFILLMENT_WRITE",
            Permission::CsRead => "CS_READ",
            Permission::CsWrite => "CS_WRITE",
            Permission::FinanceRead => "FINANCE_READ",
            Permission::FinanceWrite => "FINANCE_WRITE",
            Permission::ChannelManage => "CHANNEL_MANAGE",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Write permissions change state; an API key without any of them is read-only.
    pub const fn is_write(self) -> bool {
        !matches!(
            self,
            Permission::TenantRead
                | Permission::StaffRead
                | Permission::AuditRead
                | Permission::PiiRead
                | Permission::CatalogRead
                | Permission::InventoryRead
                | Permission::OrderRead
                | Permission::CsRead
                | Permission::FinanceRead
        )
    }
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Owner,
        Role::Admin,
        Role::Operator,
        Role::Warehouse,
        Role::CsAgent,
        Role::Finance,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "OWNER",
            Role::Admin => "ADMIN",
            Role::Operator => "OPERATOR",
            Role::Warehouse => "WAREHOUSE",
            Role::CsAgent => "CS_AGENT",
            Role::Finance => "FINANCE",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The permission matrix (docs/PERMISSIONS.md renders the same table).
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Owner | Role::Admin => &Permission::ALL,
            Role::Operator => &[
                TenantRead,
                StaffRead,
                CatalogRead,
                CatalogWrite,
                InventoryRead,
                InventoryWrite,
                OrderRead,
                OrderWrite,
                FulfillmentWrite,
                CsRead,
            ],
            Role::Warehouse => &[
                TenantRead,
                CatalogRead,
                InventoryRead,
                InventoryWrite,
                OrderRead,
                FulfillmentWrite,
                PiiRead,
            ],
            Role::CsAgent => &[TenantRead, CatalogRead, OrderRead, CsRead, CsWrite],
            Role::Finance => &[TenantRead, OrderRead, FinanceRead, FinanceWrite],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions as a bit mask: cheap to copy into every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermissionSet(u32);

impl PermissionSet {
    pub fn of_roles(roles: &[Role]) -> Self {
        roles
            .iter()
            .flat_map(|r| r.permissions().iter().copied())
            .collect()
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & (1 << p as u32) != 0
    }

    pub fn intersect(self, other: PermissionSet) -> Self {
        PermissionSet(self.0 & other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    pub fn has_any_write(self) -> bool {
        self.iter().any(Permission::is_write)
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        PermissionSet(iter.into_iter().fold(0, |m, p| m | (1 << p as u32)))
    }
}

/// Why a role change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleChangeError {
    #[error("only an OWNER may grant or remove OWNER or ADMIN")]
    NeedsOwner,
    #[error("you cannot change your own roles")]
    SelfChange,
    #[error("a staff member needs at least one role")]
    Empty,
    #[error("the tenant must keep at least one active OWNER")]
    LastOwner,
}

/// Decides whether `actor` may move `target` from `current` roles to `next` roles.
/// `other_active_owners` counts active owners besides the target.
pub fn check_role_change(
    actor_roles: &[Role],
    actor_is_target: bool,
    current: &[Role],
    next: &[Role],
    other_active_owners: usize,
) -> Result<(), RoleChangeError> {
    if next.is_empty() {
        return Err(RoleChangeError::Empty);
    }
    if actor_is_target {
        return Err(RoleChangeError::SelfChange);
    }
    let privileged = |rs: &[Role]| rs.iter().any(|r| matches!(r, Role::Owner | Role::Admin));
    if (privileged(current) || privileged(next)) && !actor_roles.contains(&Role::Owner) {
        return Err(RoleChangeError::NeedsOwner);
    }
    if current.contains(&Role::Owner) && !next.contains(&Role::Owner) && other_active_owners == 0 {
        return Err(RoleChangeError::LastOwner);
    }
    Ok(())
}

/// A field-level input problem: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidInput {
    InvalidInput {
        field,
        message: message.into(),
    }
}

/// A tenant's URL-safe handle: 3–40 of `a-z 0-9 -`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(field: &'static str, s: &str) -> Result<Slug, InvalidInput> {
        let s = s.trim().to_ascii_lowercase();
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !(3..=40).contains(&s.len()) || !ok_chars || s.starts_with('-') || s.ends_with('-') {
            return Err(invalid(
                field,
                "must be 3-40 characters of a-z, 0-9 and '-', not starting or ending with '-'",
            ));
        }
        Ok(Slug(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A syntactically plausible e-mail address, trimmed and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &'static str, s: &str) -> Result<Email, InvalidInput> {
        let s = s.trim().to_lowercase();
        let valid = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                }
                None => false,
            };
        if !valid {
            return Err(invalid(field, "is not a valid e-mail address"));
        }
        Ok(Email(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the policy. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    pub fn parse(field: &'static str, s: &str) -> Result<Password, InvalidInput> {
        let n = s.chars().count();
        if n < 10 {
            return Err(invalid(field, "must be at least 10 characters"));
        }
        if n > 128 {
            return Err(invalid(field, "must be at most 128 characters"));
        }
        Ok(Password(s.to_string()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A display name: trimmed, 1–100 characters, no control characters.
pub fn parse_display_name(field: &'static str, s: &str) -> Result<String, InvalidInput> {
    let s = s.trim();
    let n = s.chars().count();
    if n == 0 || n > 100 || s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "must be 1-100 characters without control characters",
        ));
    }
    Ok(s.to_string())
}

/// Parses a list of role names; unknown names are an input error.
pub fn parse_roles(field: &'static str, names: &[String]) -> Result<Vec<Role>, InvalidInput> {
    let mut roles = Vec::with_capacity(names.len());
    for n in names {
        let role = Role::parse(n).ok_or_else(|| invalid(field, format!("unknown role {n}")))?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(invalid(field, "at least one role is required"));
    }
    roles.sort();
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_admin_hold_every_permission() {
        for p in Permission::ALL {
            assert!(PermissionSet::of_roles(&[Role::Owner]).contains(p));
            assert!(PermissionSet::of_roles(&[Role::Admin]).contains(p));
        }
    }

    #[test]
    fn cs_agent_cannot_manage_staff_or_read_pii() {
        let set = PermissionSet::of_roles(&[Role::CsAgent]);
        assert!(!set.contains(Permission::StaffManage));
        assert!(!set.contains(Permission::PiiRead));
        assert!(set.contains(Permission::CsWrite));
    }

    #[test]
    fn read_only_set_has_no_write() {
        let set: PermissionSet = [Permission::StaffRead, Permission::OrderRead]
            .into_iter()
            .collect();
        assert!(!set.has_any_write());
        let set: PermissionSet = [Permission::StaffRead, Permission::StaffManage]
            .into_iter()
            .collect();
        assert!(set.has_any_write());
    }

    #[test]
    fn permission_and_role_names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("owner"), None);
    }

    #[test]
    fn admin_cannot_grant_admin_but_owner_can() {
        let r = check_role_change(&[Role::Admin], false, &[Role::Operator], &[Role::Admin], 1);
        assert_eq!(r, Err(RoleChangeError::NeedsOwner));
        assert!(
            check_role_change(&[Role::Owner], false, &[Role::Operator], &[Role::Admin], 1).is_ok()
        );
        assert!(
            check_role_change(
                &[Role::Admin],
                false,
                &[Role::Operator],
                &[Role::Finance],
                1
            )
            .is_ok()
        );
    }

    #[test]
    fn the_last_owner_cannot_be_demoted_and_nobody_changes_their_own_roles() {
        assert_eq!(
            check_role_change(&[Role::Owner], false, &[Role::Owner], &[Role::Admin], 0),
            Err(RoleChangeError::LastOwner)
        );
        assert_eq!(
            check_role_change(&[Role::Owner], true, &[Role::Owner], &[Role::Admin], 3),
            Err(RoleChangeError::SelfChange)
        );
        assert_eq!(
            check_role_change(&[Role::Owner], false, &[Role::Owner], &[], 3),
            Err(RoleChangeError::Empty)
        );
    }

    #[test]
    fn slug_rules() {
        assert_eq!(
            Slug::parse("s", " Demo-1 ").map(|s| s.0),
            Ok("demo-1".into())
        );
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "a b c",
            "数字商店",
            "a'; drop table--",
        ] {
            assert!(Slug::parse("s", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn email_rules() {
        assert_eq!(
            Email::parse("e", " Alice@Example.COM ").map(|e| e.0),
            Ok("alice@example.com".into())
        );
        for bad in ["", "a", "a@b", "@b.com", "a@@b.com", "a b@c.com", "a@.com"] {
            assert!(Email::parse("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_policy_counts_characters_not_bytes() {
        assert!(Password::parse("p", "短密码").is_err());
        assert!(Password::parse("p", "十个汉字的密码很安全吧").is_ok());
        assert!(Password::parse("p", &"x".repeat(129)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("p", "secret-secret").unwrap()),
            "Password(..)"
        );
    }

    #[test]
    fn roles_parse_dedupes_and_rejects_unknown() {
        let r = parse_roles("roles", &["ADMIN".into(), "ADMIN".into(), "FINANCE".into()]).unwrap();
        assert_eq!(r, vec![Role::Admin, Role::Finance]);
        assert!(parse_roles("roles", &["ROOT".into()]).is_err());
        assert!(parse_roles("roles", &[]).is_err());
    }
}
