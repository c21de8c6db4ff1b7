#!/usr/bin/env node
'use strict';
require('../dist/proxy/cli.js').main(process.argv.slice(2));
