"""Who may use Sandman and what they did: users, teams and projects, roles (one
policy module), personal tokens, single sign-on and the audit trail."""
