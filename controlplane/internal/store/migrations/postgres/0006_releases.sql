-- The release catalog (docs/fleet.md): releases of each product and its
-- channels. Operator-wide, not tenant-scoped.
CREATE TABLE releases (
    id          UUID PRIMARY KEY,
    product     TEXT NOT NULL,
    version     TEXT NOT NULL,
    -- versions.Version.SortKey: byte order is semver precedence.
    version_key TEXT NOT NULL,
    state       INTEGER NOT NULL,
    notes       TEXT NOT NULL,
    -- JSON [{"component": "host", "range": ">3.4"}]
    constraints TEXT NOT NULL,
    etag        TEXT NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    UNIQUE (product, version)
);
CREATE INDEX releases_product_key ON releases (product, version_key);

CREATE TABLE channels (
    id          UUID PRIMARY KEY,
    product     TEXT NOT NULL,
    name        TEXT NOT NULL,
    -- JSON {"<plan>": "<version>"}; the plan "" is the fallback.
    defaults    TEXT NOT NULL,
    etag        TEXT NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    UNIQUE (product, name)
);
