-- A detection's version (the sequence of its newest event), served as its
-- ETag so that `If-Match` can refuse an edit made against a stale read.
ALTER TABLE detections ADD COLUMN version bigint NOT NULL DEFAULT 0;

UPDATE detections d
   SET version = e.sequence
  FROM (SELECT aggregate_id, max(sequence) AS sequence
          FROM events WHERE aggregate_type = 'detection'
         GROUP BY aggregate_id) e
 WHERE e.aggregate_id = d.detection_id::text;
