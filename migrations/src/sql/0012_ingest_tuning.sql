-- Ingestion throughput (bench/ingest): cheaper writes of what a burst of marketplace orders touches.

-- Outbox payloads of fetched orders run to ~200 kB per 200-order message: lz4 compresses them at a
-- fraction of pglz's CPU (the relay reads each once).
ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION lz4;

-- Settling updates every new order and its lines once or twice (warehouse, stock state): room on
-- the page lets updates of columns no index covers stay heap-only (HOT), without new index entries.
ALTER TABLE orders SET (fillfactor = 80);
ALTER TABLE order_lines SET (fillfactor = 70);
