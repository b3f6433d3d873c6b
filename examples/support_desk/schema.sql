-- Northwind Outfitters' support-desk database (SQLite). Money is in cents of the row's
-- currency; times are ISO 8601 UTC strings. `effects` is the audit trail of every write a
-- desk tool makes (empty in a freshly seeded database).
PRAGMA foreign_keys = ON;

CREATE TABLE customers (
    id TEXT PRIMARY KEY,                 -- C-00001
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    phone TEXT,
    country TEXT NOT NULL,
    language TEXT NOT NULL,
    loyalty_tier TEXT NOT NULL,
    marketing_opt_in INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'deleted')),
    created_at TEXT NOT NULL
);
CREATE TABLE addresses (
    id INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    label TEXT NOT NULL,
    line1 TEXT NOT NULL,
    line2 TEXT NOT NULL DEFAULT '',
    city TEXT NOT NULL,
    postcode TEXT NOT NULL,
    country TEXT NOT NULL,
    is_default INTEGER NOT NULL
);
CREATE TABLE products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    price_eur_cents INTEGER NOT NULL
);
CREATE TABLE orders (
    id TEXT PRIMARY KEY,                 -- NW-100001
    customer_id TEXT NOT NULL REFERENCES customers(id),
    placed_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('placed', 'processing', 'dispatched', 'delivered', 'cancelled', 'returned')),
    currency TEXT NOT NULL,
    subtotal_cents INTEGER NOT NULL,
    shipping_cents INTEGER NOT NULL,
    vat_cents INTEGER NOT NULL,          -- included in the prices
    total_cents INTEGER NOT NULL,        -- subtotal + shipping
    address_id INTEGER NOT NULL REFERENCES addresses(id),
    carrier TEXT NOT NULL,
    service TEXT NOT NULL
);
CREATE TABLE order_items (
    id INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders(id),
    sku TEXT NOT NULL REFERENCES products(sku),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL,
    line_total_cents INTEGER NOT NULL
);
CREATE TABLE payments (
    id TEXT PRIMARY KEY,                 -- PA-100001
    order_id TEXT NOT NULL REFERENCES orders(id),
    method TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    refunded_cents INTEGER NOT NULL DEFAULT 0,
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('captured', 'partially_refunded', 'refunded')),
    captured_at TEXT NOT NULL,
    card_last4 TEXT
);
CREATE TABLE shipments (
    id TEXT PRIMARY KEY,                 -- SH-100001
    order_id TEXT NOT NULL REFERENCES orders(id),
    carrier TEXT NOT NULL,
    service TEXT NOT NULL,
    tracking_number TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN
        ('in_transit', 'delayed', 'delivered', 'lost', 'returned_to_sender')),
    shipped_at TEXT NOT NULL,
    estimated_delivery TEXT NOT NULL,
    delivered_at TEXT
);
CREATE TABLE carrier_events (
    id INTEGER PRIMARY KEY,
    shipment_id TEXT NOT NULL REFERENCES shipments(id),
    at TEXT NOT NULL,
    code TEXT NOT NULL,
    description TEXT NOT NULL,
    location TEXT NOT NULL
);
CREATE TABLE returns (
    id TEXT PRIMARY KEY,                 -- RT-10001
    order_id TEXT NOT NULL REFERENCES orders(id),
    customer_id TEXT NOT NULL REFERENCES customers(id),
    sku TEXT NOT NULL REFERENCES products(sku),
    quantity INTEGER NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('requested', 'label_sent', 'received', 'refunded', 'rejected')),
    created_at TEXT NOT NULL
);
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,                 -- SUB-1001
    customer_id TEXT NOT NULL REFERENCES customers(id),
    plan TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'past_due', 'cancelled')),
    currency TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    renews_at TEXT
);
CREATE TABLE invoices (
    id TEXT PRIMARY KEY,                 -- INV-200001
    customer_id TEXT NOT NULL REFERENCES customers(id),
    order_id TEXT REFERENCES orders(id),
    subscription_id TEXT REFERENCES subscriptions(id),
    issued_at TEXT NOT NULL,
    due_at TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('paid', 'unpaid', 'void'))
);
CREATE TABLE tickets (
    id TEXT PRIMARY KEY,                 -- T-50001
    customer_id TEXT NOT NULL REFERENCES customers(id),
    order_id TEXT REFERENCES orders(id),
    subject TEXT NOT NULL,
    category TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'pending', 'solved', 'closed')),
    priority TEXT NOT NULL,
    channel TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE ticket_messages (
    id INTEGER PRIMARY KEY,
    ticket_id TEXT NOT NULL REFERENCES tickets(id),
    at TEXT NOT NULL,
    author TEXT NOT NULL CHECK (author IN ('customer', 'agent', 'note')),
    body TEXT NOT NULL
);
CREATE TABLE refunds (
    id TEXT PRIMARY KEY,                 -- RF-10001
    order_id TEXT NOT NULL REFERENCES orders(id),
    payment_id TEXT NOT NULL REFERENCES payments(id),
    customer_id TEXT NOT NULL REFERENCES customers(id),
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('issued', 'reversed')),
    created_at TEXT NOT NULL,
    run_id TEXT
);
CREATE TABLE effects (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    order_id TEXT,
    amount_cents INTEGER,
    currency TEXT,
    run_id TEXT,
    idempotency_key TEXT NOT NULL UNIQUE,
    result TEXT NOT NULL                 -- the tool's answer, returned again on a retry
);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE INDEX items_order ON order_items(order_id);
CREATE INDEX payments_order ON payments(order_id);
CREATE INDEX shipments_order ON shipments(order_id);
CREATE INDEX events_shipment ON carrier_events(shipment_id);
CREATE INDEX invoices_customer ON invoices(customer_id);
CREATE INDEX tickets_customer ON tickets(customer_id);
CREATE INDEX messages_ticket ON ticket_messages(ticket_id);
CREATE INDEX refunds_order ON refunds(order_id);
CREATE INDEX effects_kind ON effects(kind);
