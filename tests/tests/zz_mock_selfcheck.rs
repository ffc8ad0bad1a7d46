//! TEMPORARY self-check of the python helpers against librdkafka's mock cluster. Not to be kept.
use rdkafka::mocking::MockCluster;

#[test]
fn mock_python() {
    let mock = MockCluster::new(1).unwrap();
    let bs = mock.bootstrap_servers();
    for t in ["py-none-plain", "py-gzip-idem", "py-lz4-plain", "py-zstd-idem", "py-snappy-plain"] {
        mock.create_topic(t, 3, 1).unwrap();
    }
    let code = r#"
import sys, time
sys.path.insert(0, 'python')
import test_kafka_python as t, logging; logging.basicConfig(level=logging.DEBUG)
from kafka import KafkaConsumer, TopicPartition
bs = sys.argv[1]
ts0 = int(time.time() * 1000) - 3_600_000
for n, (codec, idem) in enumerate([(None, False), ('gzip', True), ('lz4', False), ('zstd', True), ('snappy', False)]):
    topic = f"py-{codec or 'none'}-{'idem' if idem else 'plain'}"
    records = t.make_records(120, ts0, seed=n)
    placed = t.produce(bs, topic, 3, records, compression_type=codec, enable_idempotence=idem, acks='all' if idem else 1)
    got = t.consume_all(bs, topic, [0, 1, 2])
    t.check_roundtrip(bs, topic, 3, records, placed, got)
    print('ok', topic, flush=True)
c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False)
tp0 = TopicPartition('py-none-plain', 0)
print(c.beginning_offsets([tp0]), c.end_offsets([tp0]))
print(c.offsets_for_times({tp0: ts0 + 30001}))
"#;
    let st = std::process::Command::new(".venv/bin/python").arg("-c").arg(code).arg(&bs).status().unwrap();
    assert!(st.success());
}
