-- nothing to run here;
/* 'not; a' "statement" */

-- end
