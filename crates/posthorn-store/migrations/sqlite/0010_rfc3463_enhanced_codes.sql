-- Enhanced status codes in stored event details are now read as RFC 3463
-- codes (posthorn_core::EnhancedCode: class 2, 4 or 5, then a subject and
-- a detail of one to three digits without leading zeros). Older versions
-- could store things that are not such a code: `3.0.0` implied for a 3xx
-- reply, a class-6 token taken from a server's text. They never were status
-- codes, and the reply text stored beside them keeps the server's words, so
-- they are removed here; every stored event then reads back as its kind's
-- details instead of failing the read.
UPDATE events
SET details = json_remove(details, '$.enhanced_code')
WHERE json_valid(details)
  AND json_type(details, '$.enhanced_code') IS NOT NULL
  AND json_type(details, '$.enhanced_code') != 'null'
  AND NOT (
    json_type(details, '$.enhanced_code') = 'text'
    AND (
       SELECT code GLOB '[245].[0-9].[0-9]'
       OR code GLOB '[245].[0-9].[1-9][0-9]'
       OR code GLOB '[245].[0-9].[1-9][0-9][0-9]'
       OR code GLOB '[245].[1-9][0-9].[0-9]'
       OR code GLOB '[245].[1-9][0-9].[1-9][0-9]'
       OR code GLOB '[245].[1-9][0-9].[1-9][0-9][0-9]'
       OR code GLOB '[245].[1-9][0-9][0-9].[0-9]'
       OR code GLOB '[245].[1-9][0-9][0-9].[1-9][0-9]'
       OR code GLOB '[245].[1-9][0-9][0-9].[1-9][0-9][0-9]'
       FROM (SELECT json_extract(details, '$.enhanced_code') AS code)
    )
  );
