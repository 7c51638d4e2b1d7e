module fanout.test/envelope-verdict

go 1.19
