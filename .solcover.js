// solidity-coverage settings: test-only mocks are not part of the measured code.
module.exports = {
  skipFiles: ["test/"],
  istanbulReporter: ["text", "json-summary", "json", "lcov"],
};
