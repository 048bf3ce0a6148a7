-- CreateTable
CREATE TABLE "Outbox" (
    "id" BIGSERIAL NOT NULL,
    "kind" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "payload" JSONB NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "lastError" TEXT,

    CONSTRAINT "Outbox_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "Outbox_kind_id_idx" ON "Outbox"("kind", "id");

-- Wakes the relays (sample-app/src/outbox.ts LISTENs on `outbox`) when a transaction that inserted rows commits: one
-- notification per statement, and PostgreSQL folds the identical ones of a transaction into one. Written by hand:
-- Prisma's schema has no triggers (a later diff neither sees nor drops it).
CREATE FUNCTION "outbox_notify"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('outbox', '');
  RETURN NULL;
END
$$;

CREATE TRIGGER "Outbox_notify" AFTER INSERT ON "Outbox" FOR EACH STATEMENT EXECUTE FUNCTION "outbox_notify"();
