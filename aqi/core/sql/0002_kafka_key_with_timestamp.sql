-- A Kafka record is identified by its coordinates AND its timestamp.
-- When a topic is recreated, or the embedded in-memory broker restarts, offsets start again
-- at 0: with the coordinates alone as the key, `aqi stream --no-fail-on-data-loss` would have
-- dropped every new record whose offset an old one had used ("on conflict do nothing").
-- The record timestamp tells the two apart; a replayed batch still conflicts (same record).
alter table raw.openaq_measurements drop constraint if exists openaq_measurements_kafka_key;
create unique index if not exists openaq_measurements_kafka_record
    on raw.openaq_measurements (kafka_topic, kafka_partition, kafka_offset,
                                coalesce(kafka_timestamp, '-infinity'::timestamptz));

alter table raw.openaq_quarantine drop constraint if exists openaq_quarantine_kafka_key;
create unique index if not exists openaq_quarantine_kafka_record
    on raw.openaq_quarantine (kafka_topic, kafka_partition, kafka_offset,
                              coalesce(kafka_timestamp, '-infinity'::timestamptz));
